"""People in the loop: the queue ranks by disagreement and says why, Label Studio's converter reads
our files, an import makes a review round whose human rows win (now and in later rounds), twice
adds nothing, and bad exports are refused whole, by task and region, before anything is written."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.diff import diff_rounds
from engine.dataset.store import Store
from engine.review.apply import apply_to_round
from engine.review.handoff import write_queue
from engine.review.importer import dataset_id, import_export
from engine.review.label_studio import OCR_LABEL, ExportError, read_export
from engine.review.queue import WEIGHTS, QueueConfig, build_queue, random_queue
from engine.review.simulate import answer_from_truth
from tests.rows import table_of, valid_row

W, H = 100, 80
CONFIG = {"filters": {"regions": {"min_score": 0.25, "min_score_by_specialist": {"yolo": 0.3}}}}
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc)


def region(rid, image, box, label, score=0.9, kind="object", r=1, specialist="yolo", members=None, mask=None):
    return valid_row("regions", region_id=rid, image_id=image, box=box, label=label, kind=kind, score=score, round=r,
                     specialist=specialist, members=members, mask=mask)


def machine_rows(r: int) -> dict[str, list[dict]]:
    members = [{"specialist": "yolo", "specialist_version": "v", "region_id": f"y3-{r}", "label": "square", "score": 0.9},
               {"specialist": "florence2", "specialist_version": "v", "region_id": f"f3-{r}", "label": "circle",
                "score": None}]
    regions = [region(f"a{r}", "img0", [10, 10, 40, 40], "square"), region(f"b{r}", "img0", [11, 10, 40, 41], "circle", 0.8),
               region(f"c{r}", "img1", [10, 10, 30, 30], "star", 0.32),
               region(f"d{r}", "img2", [10, 10, 30, 30], "star", 0.95),
               region(f"e{r}", "img3", [50, 20, 90, 60], "square", 2.0, specialist="fusion", members=members),
               region(f"f{r}", "img4", [0, 0, 20, 20], "square", 0.9),
               region(f"o{r}", "img0", [60, 60, 90, 70], "OPEN", 0.9, kind="ocr", specialist="rapidocr"),
               region(f"g{r}", "gold0", [10, 10, 40, 40], "square"), region(f"h{r}", "gold0", [11, 10, 40, 41], "circle")]
    for row in regions:
        row["round"] = r
        row["score_source"] = "agreement_count" if row["specialist"] == "fusion" else "model_probability"
    texts = [valid_row("texts", text_id=f"t{r}", image_id="img4", text="a red star beside a square", round=r),
             valid_row("texts", text_id=f"u{r}", image_id="img0", text="a square and a circle", round=r)]
    triplets = [valid_row("triplets", triplet_id=f"p{r}", image_id="img0", text_id=f"u{r}", text="a square and a circle",
                          phrase="a square", span_start=0, span_end=8, box=[10.0, 10.0, 40.0, 40.0], region_id=f"a{r}",
                          round=r)]
    return {"regions": regions, "texts": texts, "triplets": triplets}


def write_round(store: Store, r: int, kind: str = "specialists") -> None:
    with store.writer(r) as w:
        for table, rows in machine_rows(r).items():
            w.write(table, "c" + "0" * 15 + str(r), table_of(table, rows))
        w.write("rounds", "round", table_of("rounds", [valid_row("rounds", round=r, kind=kind, config=json.dumps(CONFIG),
                                                                  started_at=NOW, finished_at=NOW)]))


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    images = [valid_row("images", image_id=f"img{i}", uri=str(tmp_path / f"img{i}.png"), width=W, height=H)
              for i in range(6)]
    images.append(valid_row("images", image_id="gold0", uri=str(tmp_path / "gold0.png"), width=W, height=H, split="gold"))
    for row in images:
        Image.new("RGB", (W, H), "white").save(row["uri"])
    with store.writer(0) as w:
        w.write("images", "source", table_of("images", images))
    write_round(store, 1)
    return store


@pytest.fixture
def truth(tmp_path):
    """The world's answer for the pool images: what a careful person would say."""
    truth = Store(tmp_path / "truth", create=True)
    prov = {"round": 0, "specialist": "world", "specialist_version": "1", "score": None, "score_source": "ground_truth"}
    images = [valid_row("images", image_id=f"img{i}", uri=f"/x/img{i}.png", width=W, height=H) for i in range(6)]
    regions = [valid_row("regions", region_id=f"img{i}-{k}", image_id=f"img{i}", box=b, label=label, kind=kind, mask=None,
                         **prov)
               for i in range(6) for k, (b, label, kind) in enumerate([([10.0, 10.0, 40.0, 40.0], "square", "object"),
                                                                       ([50.0, 50.0, 70.0, 75.0], "star", "object"),
                                                                       ([60.0, 60.0, 90.0, 70.0], "OPEN", "ocr")])]
    texts = [valid_row("texts", text_id=f"img{i}-{g}", image_id=f"img{i}", granularity=g, text=f"A square and a star {g}.",
                       **prov) for i in range(6) for g in ("brief", "detailed")]
    with truth.writer(0) as w:
        w.write("images", "truth", table_of("images", images))
        w.write("regions", "truth", table_of("regions", regions))
        w.write("texts", "truth", table_of("texts", texts))
    return truth


def queue_and_answer(store, truth, tmp_path, k=2, name="export.json"):
    files = write_queue(store, 1, build_queue(store, 1), k, tmp_path / "queue")
    return answer_from_truth(files.tasks, truth, tmp_path / name, when=NOW)


def test_the_queue_ranks_by_disagreement_and_says_why(store):
    alone = QueueConfig(weights={**WEIGHTS, "unconfirmed": 0.0})  # each signal on its own image
    entries = build_queue(store, 1, alone)
    order = [e.image_id for e in entries]
    assert "gold0" not in order and set(order) == {f"img{i}" for i in range(6)}  # gold is never reviewed
    signals = {e.image_id: {r.signal for r in e.reasons} for e in entries}
    assert signals["img0"] == {"label_clash"} and signals["img1"] == {"near_floor"}
    assert signals["img3"] == {"fused_disagree"} and signals["img4"] == {"caption_vs_boxes"}
    assert signals["img2"] == set() and signals["img5"] == set()
    assert set(order[-2:]) == {"img2", "img5"}  # nothing disagrees there: last
    by_id = {e.image_id: e for e in entries}
    assert "square / circle" in by_id["img0"].why and "star 0.32 over floor 0.30" in by_id["img1"].why
    assert "names a star, no box" in by_id["img4"].why
    # a box 0.32 over a 0.30 floor weighs more than one 0.44 over it
    assert {e.image_id: e.score for e in entries}["img1"] == pytest.approx(1 - 0.02 / 0.15, abs=1e-4)
    # Florence-2 proposes objects this round (in img3's cluster): a box only YOLO saw is unconfirmed
    default = {e.image_id: e for e in build_queue(store, 1)}
    assert "1 unconfirmed (only yolo)" in default["img2"].why and default["img5"].score == 0
    assert [e.image_id for e in random_queue(store, 3)] == [e.image_id for e in random_queue(store, 3)]


def test_a_close_call_is_judged_against_the_floor_of_its_kind(store, monkeypatch):
    """A round whose filter gave one kind of a specialist's rows its own floor (Florence-2's boxes)."""
    monkeypatch.setitem(CONFIG["filters"]["regions"]["min_score_by_specialist"], "yolo/object", 0.2)
    write_round(store, 2)
    entries = {e.image_id: e for e in build_queue(store, 2, QueueConfig(weights={**WEIGHTS, "unconfirmed": 0.0}))}
    assert "star 0.32 over floor 0.20" in entries["img1"].why


def test_a_description_quoting_text_the_ocr_did_not_read_is_queued(store):
    rows = {"regions": [region("o2", "img2", [60, 60, 90, 70], "OPEN", kind="ocr", specialist="rapidocr", r=2),
                        region("q2", "img5", [60, 60, 90, 70], "Farm", kind="ocr", specialist="rapidocr", r=2)],
            "texts": [valid_row("texts", text_id="t2", image_id="img2", text="A sign that says FARM.", round=2),
                      valid_row("texts", text_id="u2", image_id="img5", text='A sign that reads "farm".', round=2),
                      valid_row("texts", text_id="v2", image_id="img1", text="A sign that says FARM.", round=2)]}
    with store.writer(2) as w:
        for table, table_rows in rows.items():
            w.write(table, "c2", table_of(table, table_rows))
        w.write("rounds", "round", table_of("rounds", [valid_row("rounds", round=2, config=json.dumps(CONFIG),
                                                                  started_at=NOW, finished_at=NOW)]))
    why = {e.image_id: e for e in build_queue(store, 2)}
    assert {r.signal for r in why["img2"].reasons} == {"quote_vs_text"} and "quotes FARM, the OCR reads OPEN" in why["img2"].why
    assert why["img5"].score == 0  # the OCR read what it quotes, whatever the case
    assert why["img1"].score == 0  # no OCR in the image: nothing to judge the quote by


def test_label_studio_converter_reads_our_files_as_we_do(store, truth, tmp_path):
    converter = pytest.importorskip("label_studio_converter")
    export = queue_and_answer(store, truth, tmp_path, k=3)
    ours = read_export(export, store.image_sizes(), {"square", "star", "circle"})
    conv = converter.Converter(config=str(tmp_path / "queue" / "label_config.xml"), project_dir=str(tmp_path),
                               download_resources=False)
    conv.convert_to_coco(str(export), str(tmp_path / "coco"), is_dir=False)
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    theirs = sorted((names[a["category_id"]], tuple(round(v, 3) for v in a["bbox"])) for a in coco["annotations"])
    mine = sorted((OCR_LABEL if b.kind == "ocr" else b.label,
                   tuple(round(v, 3) for v in (b.box[0], b.box[1], b.box[2] - b.box[0], b.box[3] - b.box[1])))
                  for t in ours for b in t.answer.boxes)
    assert theirs == mine and len(mine) == 9


def test_an_import_makes_a_review_round_where_human_rows_win(store, truth, tmp_path):
    export = queue_and_answer(store, truth, tmp_path)
    reviewed = {t["data"]["image_id"] for t in json.loads(export.read_text())}
    result = import_export(store, export)
    assert (result.round, result.created, result.new) == (2, True, 2)
    rounds = {r["round"]: r for r in store.read("rounds").to_pylist()}
    assert rounds[2]["kind"] == "review" and rounds[2]["status"] == "completed"
    regions = store.read("regions", 2).to_pylist()
    on_reviewed = [r for r in regions if r["image_id"] in reviewed and r["kind"] in ("object", "ocr")]
    assert {r["score_source"] for r in on_reviewed} == {"human"} and len(on_reviewed) == 6
    assert {r["label"] for r in on_reviewed} == {"square", "star", "OPEN"}
    untouched = sorted(r["region_id"] for r in regions if r["image_id"] not in reviewed)
    assert untouched == sorted(r["region_id"] for r in machine_rows(1)["regions"]
                               if r["image_id"] not in reviewed)  # copied from round 1 as they were
    rejected = store.read("rejected", 2).to_pylist()
    assert rejected and {r["filter"] for r in rejected} == {"review"}
    assert all(r["image_id"] in reviewed for r in rejected)
    ledger = store.read("reviews").to_pylist()
    assert {r["reviewer"] for r in ledger} == {"simulated-reviewer@fld"} and {r["queue_round"] for r in ledger} == {1}
    assert {r["image_id"] for r in ledger} == reviewed and all(r["reviewed_at"] == NOW for r in ledger)
    changed = {c.image_id for c in diff_rounds(store, 1, 2).changes}
    assert changed and changed <= reviewed  # the people's work, and only theirs
    from engine.report.html import build_report

    page = build_report(store, tmp_path / "report.html").read_text()
    assert "fld diff --from 1 --to 2" in page and "<td class=l>review</td>" in page


def test_the_same_export_twice_adds_nothing_and_later_rounds_keep_human_rows(store, truth, tmp_path):
    export = queue_and_answer(store, truth, tmp_path)
    import_export(store, export)
    before = {t: store.read(t).num_rows for t in ("regions", "texts", "triplets", "rejected", "reviews")}
    again = import_export(store, export)
    assert (again.new, again.already, again.round) == (0, 2, 2)
    assert {t: store.read(t).num_rows for t in before} == before
    human = sorted(store.read("regions", 2).filter(pc.equal(store.read("regions", 2).column("score_source"), "human"))
                   .column("region_id").to_pylist())
    write_round(store, 3, "refinement")  # the machines relabel every image, reviewed ones too
    applied = apply_to_round(store, 3)
    assert applied.replaced["regions"] > 0
    three = store.read("regions", 3)
    assert sorted(three.filter(pc.equal(three.column("score_source"), "human")).column("region_id").to_pylist()) == human
    reviewed = set(store.read("reviews").column("image_id").to_pylist())
    assert not [r for r in three.to_pylist() if r["image_id"] in reviewed and r["score_source"] != "human"
                and r["kind"] in ("object", "ocr")]
    assert apply_to_round(store, 3).replaced == {}  # applying again changes nothing


def test_a_newer_review_of_an_image_replaces_the_older_one(store, truth, tmp_path):
    export = queue_and_answer(store, truth, tmp_path, k=1)
    import_export(store, export)
    tasks = json.loads(export.read_text())
    newer = tasks[0]["annotations"][0] | {"id": 99, "updated_at": (NOW + dt.timedelta(hours=1)).isoformat(),
                                          "completed_by": {"email": "second@x"}}
    newer["result"] = [r for r in newer["result"] if r.get("value", {}).get("rectanglelabels") != ["star"]]
    tasks[0]["annotations"].append(newer)  # the same task edited twice: the latest counts
    (tmp_path / "second.json").write_text(json.dumps(tasks))
    result = import_export(store, tmp_path / "second.json")
    assert (result.round, result.new, result.superseded) == (2, 1, 1)
    human = [r for r in store.read("regions", 2).to_pylist() if r["score_source"] == "human"]
    assert {r["specialist_version"] for r in human} == {"second@x"} and "star" not in {r["label"] for r in human}
    assert any("superseded" in r["reason"] for r in store.read("rejected", 2).to_pylist())


def test_an_import_cut_short_is_finished_by_importing_again(store, truth, tmp_path, monkeypatch):
    import engine.review.importer as importer

    export = queue_and_answer(store, truth, tmp_path)
    real = importer._copy
    monkeypatch.setattr(importer, "_copy", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        import_export(store, export)
    assert store.read("regions", 1).num_rows == 9  # round 1 untouched
    monkeypatch.setattr(importer, "_copy", real)
    result = import_export(store, export)
    assert result.round == 2 and result.new == 0 and result.applied.human["regions"] == 6
    assert {r["status"] for r in store.read("rounds", 2).to_pylist()} == {"completed"}


def _export(tmp_path, store, result, data=None, name="bad.json", annotations=None):
    data = {"image": "x", "image_id": "img1", "fld_dataset": dataset_id(store), "fld_round": 1, **(data or {})}
    body = [{"id": 7, "data": data, "annotations": annotations if annotations is not None else
             [{"id": 1, "completed_by": 1, "updated_at": NOW.isoformat(), "result": result}]}]
    (tmp_path / name).write_text(json.dumps(body))
    return tmp_path / name


def rect(rid, x, y, w, h, label, rotation=0):
    return {"id": rid, "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": W,
            "original_height": H, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                                            "rectanglelabels": [label]}}


@pytest.mark.parametrize("case, expected", [
    ({"data": {"fld_dataset": "0" * 32}}, "another dataset"),
    ({"data": {"fld_round": 5}}, "reviews the queue of round 5"),
    ({"data": {"image_id": "gold0"}}, "gold image"),
    ({"data": {"image_id": "nope"}}, "names an image this dataset does not have"),
    ({"result": [rect("r1", 10, 10, 20, 20, "unicorn")]}, "region r1 has label 'unicorn'"),
    ({"result": [rect("r1", 90, 10, 20, 20, "square")]}, "region r1 (square) lies outside the image"),
    ({"result": [rect("r1", 10, 10, 0, 20, "square")]}, "has no area"),
    ({"result": [rect("r1", 10, 10, 20, 20, "square", rotation=30)]}, "is rotated"),
    ({"result": [rect("r1", 10, 10, 20, 20, OCR_LABEL)]}, "without a transcription"),
    ({"result": [rect("r1", 10, 10, 20, 20, "square"), rect("r1", 30, 10, 20, 20, "square")]}, "appears twice"),
    ({"result": [{"id": "x", "from_name": "choice", "type": "choices", "value": {"choices": ["a"]}}]}, "choices"),
    ({"annotations": [{"id": 1, "was_cancelled": True, "result": []}]}, "no task was submitted"),
])
def test_bad_exports_are_refused_whole_by_task_and_region(store, tmp_path, case, expected):
    path = _export(tmp_path, store, case.get("result", [rect("r1", 10, 10, 20, 20, "square")]), case.get("data"),
                   annotations=case.get("annotations"))
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*.parquet"))
    with pytest.raises(ExportError) as err:
        import_export(store, path)
    assert expected in str(err.value) and str(path) in str(err.value)
    assert sorted(p.relative_to(store.root) for p in store.root.rglob("*.parquet")) == before


@pytest.mark.parametrize("body, expected", [("", "is empty"), ("[]", "holds no tasks"), ('{"a": 1}', "not Label Studio's"),
                                            ('[{"id": 1, "data": {"image_id": "img1"}, "annot', "not complete JSON"),
                                            ('[{"id": 1, "data": {"image_id": "img1"}}]', "JSON-MIN")])
def test_empty_cut_and_foreign_files_are_refused(store, tmp_path, body, expected):
    (tmp_path / "e.json").write_text(body)
    with pytest.raises(ExportError, match=expected):
        import_export(store, tmp_path / "e.json")


def test_an_unknown_label_can_be_allowed(store, tmp_path):
    path = _export(tmp_path, store, [rect("r1", 10, 10, 20, 20, "unicorn")])
    result = import_export(store, path, allow_labels=("unicorn",))
    assert "unicorn" in store.read("regions", result.round).column("label").to_pylist()


def test_the_commands_from_queue_to_import(store, truth, tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["review", "queue", "--data", str(store.root), "--k", "2", "--out", str(tmp_path / "q"),
                              "--json"])
    assert out.exit_code == 0, out.output
    assert [e["image_id"] for e in json.loads(out.output)["queue"]] == [e.image_id for e in build_queue(store, 1)[:2]]
    export = answer_from_truth(tmp_path / "q" / "tasks.json", truth, tmp_path / "export.json", when=NOW)
    done = runner.invoke(app, ["review", "import", str(export), "--data", str(store.root), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["round"] == 2
    human = store.read("regions", 2).filter(pc.equal(store.read("regions", 2).column("score_source"), "human"))
    lineage = runner.invoke(app, ["explain", human.column("region_id")[0].as_py(), "--data", str(store.root), "--json"])
    assert json.loads(lineage.output)["review"]["reviewer"] == "simulated-reviewer@fld"
    bad = runner.invoke(app, ["review", "import", str(tmp_path / "missing.json"), "--data", str(store.root)])
    assert bad.exit_code == 1 and "no such export file" in bad.output


def test_a_refinement_after_a_review_round_finds_the_models_below_it(tmp_path):
    from engine.loop.bootstrap import models_dir
    from engine.loop.refine import STATE, Refinement

    folder = models_dir(tmp_path, 1)
    folder.mkdir(parents=True)
    (folder / STATE).write_text(json.dumps({"round": 1, "config": "c.json", "trained": {}, "holders": {}, "gates": {}}))
    assert Refinement.load(tmp_path, 2).round == 1  # round 2 is a review round: no models of its own
    assert Refinement.load(tmp_path, 1).config == Path("c.json")


def test_refine_names_what_a_run_folder_lacks(tmp_path):
    (tmp_path / "dataset").mkdir()
    out = CliRunner().invoke(app, ["refine", "--out", str(tmp_path)])
    assert out.exit_code == 2 and "models" in out.output and "world" in out.output
