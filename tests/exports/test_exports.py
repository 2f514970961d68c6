"""Every export is read back by the library its users read it with."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.store import Store, StoreError
from engine.exports.coco import export_coco
from engine.exports.florence2_jsonl import export_florence2
from engine.exports.hf_parquet import export_hf
from engine.exports.selection import select
from engine.exports.yolo_labels import export_yolo
from schemas import schema_for
from schemas.masks import decode_rle
from specialists.florence2_parse import parse_florence2
from tests.rows import valid_row


@pytest.fixture(scope="module")
def selection(small_world):
    """The world's pool truth (round 0): objects with masks, OCR regions without, texts, triplets."""
    return select(Store(small_world.truth), 0, ("pool",))


def test_coco_reads_back_with_pycocotools(selection, tmp_path):
    from pycocotools.coco import COCO

    counts = export_coco(selection, tmp_path / "coco")
    coco = COCO(str(tmp_path / "coco" / "instances.json"))
    assert len(coco.getImgIds()) == len(selection.uris) == counts["images"]
    assert len(coco.getAnnIds()) == selection.regions.num_rows
    objects = [r for r in selection.regions.to_pylist() if r["kind"] == "object"]
    names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert {o["label"] for o in objects} | {"text", "region"} == names
    by_region = {a["fld_region_id"]: a for a in coco.loadAnns(coco.getAnnIds())}
    some = objects[0]
    mask = coco.annToMask(by_region[some["region_id"]])
    assert (mask.astype(bool) == decode_rle(some["mask"])).all()
    ocr = [a for a in by_region.values() if a["fld_kind"] == "ocr"]
    assert ocr and all("segmentation" not in a for a in ocr)  # masks missing on some regions: bbox only
    captions = COCO(str(tmp_path / "coco" / "captions.json"))
    assert len(captions.getAnnIds()) == selection.texts.num_rows


def test_florence2_jsonl_answers_parse_back(selection, tmp_path):
    counts = export_florence2(selection, tmp_path / "f2.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "f2.jsonl").read_text().splitlines()]
    assert len(lines) == counts["examples"] and counts["<OD>"] > 0
    sizes = selection.sizes
    labels = {}
    for r in selection.regions.to_pylist():
        if r["kind"] == "object":
            labels.setdefault(r["image_id"], []).append(r["label"])
    for line in lines:
        if line["task"] == "<OD>":
            items = parse_florence2(line["answer"], "<OD>", sizes[line["image_id"]])
            assert sorted(i.text for i in items) == sorted(labels[line["image_id"]])


def test_hf_layout_loads_with_datasets(selection, tmp_path):
    import datasets

    counts = export_hf(selection, tmp_path / "hf")
    loaded = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == len(selection.uris)
    assert sum(len(r) for r in loaded["regions"]) == counts["regions"] == selection.regions.num_rows
    first = loaded[0]
    assert first["image"] == selection.uris[first["image_id"]] and len(first["texts"]) == 3


def test_yolo_labels_pass_ultralytics_checker(selection, tmp_path):
    from ultralytics.data.utils import check_det_dataset

    from specialists.training.yolo import provide_font
    from specialists.yolo import configure_ultralytics

    configure_ultralytics()
    provide_font()
    counts = export_yolo(selection, tmp_path / "yolo")
    checked = check_det_dataset(str(tmp_path / "yolo" / "data.yaml"))
    assert checked["nc"] == counts["classes"]
    lines = sum(len(p.read_text().splitlines()) for p in (tmp_path / "yolo" / "labels").rglob("*.txt"))
    assert lines == counts["objects"]


def test_bad_exports_are_refused_without_writing(small_world, selection, tmp_path):
    with pytest.raises(StoreError, match=r"round 7 does not exist .*rounds with annotations: 0"):
        select(Store(small_world.truth), 7)
    store = Store(tmp_path / "ds", create=True)
    with store.writer(0) as writer:
        writer.write("images", 0, pa.Table.from_pylist([valid_row("images")], schema=schema_for("images")))
    with store.writer(1) as writer:
        writer.write("texts", 0, pa.Table.from_pylist([valid_row("texts", round=1)], schema=schema_for("texts")))
    with pytest.raises(StoreError, match="round 1 has no annotations of object"):
        select(store, 1, families=("object",))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_coco(selection, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    export_coco(selection, tmp_path / "taken", overwrite=True)
    assert not (tmp_path / "taken" / "keep.txt").exists()


def test_cli_export_and_its_errors(small_world, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["export", "coco", "--out", str(tmp_path / "c"), "--data", str(small_world.truth),
                             "--round", "0", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["images"] == small_world.config.split_counts()["pool"]
    again = runner.invoke(app, ["export", "coco", "--out", str(tmp_path / "c"), "--data", str(small_world.truth), "--round", "0"])
    assert again.exit_code == 1 and "already exists" in again.output
    missing = runner.invoke(app, ["export", "hf", "--out", str(tmp_path / "h"), "--data", str(small_world.truth), "--round", "3"])
    assert missing.exit_code == 1 and "round 3 does not exist" in missing.output and not (tmp_path / "h").exists()
    wrong = runner.invoke(app, ["export", "pdf", "--out", str(tmp_path / "p")])
    assert wrong.exit_code == 2 and "unknown export format" in wrong.output


def test_hostile_image_names_and_labels_stay_inside_the_export(selection, tmp_path):
    """Image names that climb out of folders or hold newlines, labels that hold YAML syntax: every
    file lands inside the output folder and every class name reads back whole."""
    import yaml

    hostile = ["../../../escaped.png", "a\nb.png", "name with 'quotes' & <tags>.PNG", "x.png/../../y"]
    uris = selection.images.column("uri").to_pylist()
    renamed = [str(tmp_path / "src" / hostile[k % len(hostile)]) if k < len(hostile) else u for k, u in enumerate(uris)]
    labels = ["key: value", "line\nbreak", "- item", "quote\"s"]
    regions = selection.regions
    objects = [r["kind"] == "object" for r in regions.to_pylist()]
    new_labels = [labels[k % len(labels)] if o else r for k, (o, r) in
                  enumerate(zip(objects, regions.column("label").to_pylist()))]
    import dataclasses

    odd = dataclasses.replace(selection, images=selection.images.set_column(
        selection.images.schema.get_field_index("uri"), "uri", pa.array(renamed, pa.string())),
        regions=regions.set_column(regions.schema.get_field_index("label"), "label", pa.array(new_labels, pa.string())))
    out = tmp_path / "out" / "yolo"
    counts = export_yolo(odd, out)
    written = [p for p in (tmp_path / "out").rglob("*")]
    assert written and all(p == out or out in p.parents for p in written)
    assert not (tmp_path / "escaped.png").exists() and not list(tmp_path.glob("*/escaped.png"))
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    assert sorted(names.values()) == sorted(set(labels)) and counts["classes"] == len(labels)
