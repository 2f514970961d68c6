"""Bootstrap on the seed split, then a refinement round's retrain-and-gate, in this process
(the rounds themselves run through Ray in tests/engine and in the slow end-to-end test)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import Store
from engine.loop.bootstrap import bootstrap, models_dir, oracle, train_specialists
from engine.loop.profiles import Profile
from engine.loop.refine import Refinement, config_path, first_round, prepare_refinement
from engine.loop.training import MANIFEST, MEASURE_VERSION, TRAINED
from engine.round.config import RoundConfig
from specialists.training.florence2 import Florence2Budget
from specialists.training.sam import SamBudget
from specialists.training.yolo import YoloBudget

TINY = {"yolo": YoloBudget(epochs=1, imgsz=64), "sam": SamBudget(steps=2),
        "florence2": Florence2Budget(steps=3, batch=4, tasks=("<OD>", "<CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>",
                                                              "<OCR_WITH_REGION>", "<REGION_TO_DESCRIPTION>"))}
PROFILE = Profile("test", world_images=30, seed_fraction=0.3, gold_fraction=0.2, bootstrap=TINY, refine=TINY)


@pytest.fixture(scope="module")
def booted(small_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    models = root / "models"
    return root, models, bootstrap(small_world, models, PROFILE)


def test_bootstrap_trains_measures_and_reuses(small_world, booted):
    root, models, result = booted
    assert set(result.models) == {"yolo", "sam", "grabcut", "florence2"}  # grabcut: measured, not trained
    assert result.models["grabcut"].gold["region-text/mask_iou"] > 0.5  # near-perfect on drawn shapes
    for name, trained in result.models.items():
        manifest = json.loads((trained.folder / MANIFEST).read_text())
        assert manifest["gold"], name  # measured on gold, stored with the model
        assert all(v is None or 0.0 <= v <= 1.0 or k.endswith("cider") for k, v in manifest["gold"].items())
    assert "region-text/detection_f1" in result.models["yolo"].gold
    assert "region-text/mask_iou" in result.models["sam"].gold
    assert "text/brief.bleu4" in result.models["florence2"].gold
    # region captions are measured on the gold boxes they are given; OCR on the image alone
    assert {"region-text/region_caption_word_f1", "region-text/ocr_word_f1"} <= set(result.models["florence2"].gold)
    assert "region-text/detection_f1" in result.models["florence2"].gold  # <OD>: not the gold boxes' perfect F1
    assert result.models["florence2"].gold["region-text/detection_f1"] < 1.0
    mtimes = {n: (t.folder / MANIFEST).stat().st_mtime_ns for n, t in result.models.items()}
    again = bootstrap(small_world, models, PROFILE)  # unchanged inputs: reused, not retrained
    assert {n: (t.folder / MANIFEST).stat().st_mtime_ns for n, t in again.models.items()} == mtimes
    # a model measured by an older evaluation is measured again; its training is reused
    yolo = result.models["yolo"].folder
    trained_at = (yolo / TRAINED).stat().st_mtime_ns
    old = json.loads((yolo / MANIFEST).read_text())
    (yolo / MANIFEST).write_text(json.dumps({**old, "measure_version": "0", "gold": {}}))
    remeasured = bootstrap(small_world, models, PROFILE).models["yolo"]
    assert remeasured.manifest["measure_version"] == MEASURE_VERSION and remeasured.gold == old["gold"]
    assert (yolo / TRAINED).stat().st_mtime_ns == trained_at


def test_the_oracle_trains_on_seed_and_pool_truth_into_its_own_folder_and_round_zero_goes_on_record(small_world, booted,
                                                                                         tmp_path):
    root, models, result = booted
    ceiling = oracle(small_world, models, PROFILE, only=("yolo",))
    trained = ceiling.models["yolo"]
    assert trained.folder == models / "oracle" / "yolo"
    counts = small_world.config.split_counts()
    assert trained.manifest["train_images"] == counts["pool"] + counts["seed"]
    assert trained.measured("gold")["region-text/detection_f1"]["value"] == trained.gold["region-text/detection_f1"]
    store = Store(tmp_path / "data", create=True)
    result.write_metrics(store)
    rows = store.read("metrics", 0).to_pylist()
    assert {r["source"] for r in rows} == {f"model:{n}" for n in result.models}
    assert {r["split"] for r in rows} == {"gold"}  # this world has no seed-gold split


def test_training_refuses_a_world_without_the_truth_asked_for(small_world, tmp_path):
    with pytest.raises(ValueError, match="has no unlabelled truth to train on"):
        train_specialists(small_world, tmp_path, PROFILE, ("unlabelled",), only=("yolo",))
    from engine.dataset.store import StoreError
    from engine.world.make import World

    with pytest.raises(StoreError, match="is not a world"):
        World.open(tmp_path)


def test_bootstrap_refuses_unknown_specialists_and_bad_pretrained(small_world, booted, tmp_path):
    from specialists.base import WeightsError

    with pytest.raises(ValueError, match="unknown specialist"):
        bootstrap(small_world, tmp_path, PROFILE, only=("clip",))
    (tmp_path / "not-florence").mkdir()
    (tmp_path / "not-florence" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightsError, match="not Florence-2"):
        bootstrap(small_world, tmp_path / "m", PROFILE.pretrained("florence2", str(tmp_path / "not-florence")),
                  only=("florence2",))
    with pytest.raises(ValueError, match="yolo cannot start from a pretrained checkpoint"):
        PROFILE.pretrained("yolo", str(tmp_path))


def test_refinement_retrains_gates_and_writes_the_next_config(small_world, booted):
    root, models, boot = booted
    data = root / "dataset"
    store = Store(data, create=True)
    for split in ("pool", "gold"):
        ingest(str(small_world.images(split)), store, IngestConfig(split=split))
    first = first_round(data, models, boot)
    assert config_path(data, 1).is_file() and first.gates
    RoundConfig.from_file(config_path(data, 1))  # a valid round config
    # Round 1 as if it had run: the pool's truth (a perfect round) under round 1.
    truth = Store(small_world.truth)
    pool = store.read("images").filter(pc.equal(store.read("images").column("split"), "pool")).column("image_id")
    empty = pool[0].as_py()  # round 1 kept no object on this image: not a background to learn
    with store.writer(1) as writer:
        for table in ("texts", "regions", "triplets"):
            rows = truth.read(table).filter(pc.is_in(truth.read(table).column("image_id"), pool))
            if table == "regions":
                rows = rows.filter(pc.invert(pc.and_(pc.equal(rows.column("image_id"), empty),
                                                     pc.equal(rows.column("kind"), "object"))))
            rows = rows.set_column(rows.schema.get_field_index("round"), "round", pa.array([1] * rows.num_rows, pa.int32()))
            writer.write(table, 0, rows)
    result = prepare_refinement(data, models, 2, truth, Store(small_world.gold), PROFILE)
    assert set(result.trained) == {"yolo", "sam", "grabcut", "florence2"}
    assert all(result.trained[n].folder.parent == models_dir(models, 2) for n in ("yolo", "sam", "florence2"))
    assert result.trained["grabcut"].folder.parent == models_dir(models, 0)  # nothing to retrain
    assert result.trained["yolo"].manifest["train_images"] == len(pool) - 1 + small_world.config.split_counts()["seed"]
    config = RoundConfig.from_file(config_path(data, 2))
    served = {key.split(":")[0] for key, (gate, _) in result.gates.items() if gate.chosen != "none"}
    names = {s.name for s in config.specialists}
    proposers = served - {"sam", "grabcut"}  # a segmenter only masks what others propose
    assert "rapidocr" in names and proposers <= names  # RapidOCR reads every round: its text judges quoted text
    assert config.filters.captions.readers == ("rapidocr",)
    loaded = Refinement.load(models, 2)
    assert set(loaded.gates) == set(result.gates) and loaded.config == result.config
    gates = store.read("metrics", 2)
    assert set(gates.column("family").to_pylist()) == {"gates"}


def test_a_task_without_kept_annotations_is_left_out_and_said(small_world, tmp_path, caplog):
    from dataclasses import replace

    from engine.evaluation.gold import GoldGuard
    from engine.loop.training import train_and_measure
    from engine.loop.training_set import load_training_set
    from schemas import schema_for
    from specialists.training.registry import trainer_for

    gold = Store(small_world.gold)
    seed = load_training_set(Store(small_world.truth), 0, ("seed",), GoldGuard.from_stores(gold))
    no_texts = replace(seed, tables={**seed.tables, "texts": schema_for("texts").empty_table(),
                                     "triplets": schema_for("triplets").empty_table()})
    with caplog.at_level("WARNING"):
        trained = train_and_measure(trainer_for("florence2"), no_texts, tmp_path, TINY["florence2"], gold)
    assert trained.manifest["tasks"] == ["<OCR_WITH_REGION>", "<OD>", "<REGION_TO_DESCRIPTION>"]
    assert trained.manifest["missing_tasks"] == ["<CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>"]
    assert "no kept annotations for <CAPTION>, <CAPTION_TO_PHRASE_GROUNDING>" in caplog.text
    assert set(trained.gold) and all(k.startswith(("region-text/detection", "region-text/ocr", "region-text/region_caption"))
                                      for k in trained.gold)  # only its tasks
