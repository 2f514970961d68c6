"""The YOLO and SAM trainers on a small world's seed truth: datasets ultralytics accepts, models
that load back into their specialists, and bad inputs refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from engine.dataset.store import Store
from engine.evaluation.gold import GoldGuard, GoldLeakError
from engine.loop.training_set import load_training_set


@pytest.fixture(scope="module")
def seed(small_world):
    return load_training_set(Store(small_world.truth), 0, ("seed",), GoldGuard.from_stores(Store(small_world.gold)))


def test_training_set_refuses_gold_images(small_world):
    gold = Store(small_world.gold)
    with pytest.raises(GoldLeakError, match="gold split"):
        load_training_set(gold, 0, ("gold",), GoldGuard.from_stores(gold))


def test_yolo_dataset_passes_ultralytics_checker(seed, tmp_path):
    from specialists.training.yolo import provide_font, write_yolo_dataset
    from specialists.yolo import configure_ultralytics

    configure_ultralytics()
    provide_font()
    from ultralytics.data.utils import check_det_dataset

    objects = seed.tables["regions"].filter(pc.equal(seed.tables["regions"].column("kind"), "object"))
    names = sorted(set(objects.column("label").to_pylist()))
    data = write_yolo_dataset(seed.tables["regions"], seed.uris, seed.sizes, names[:-1], tmp_path / "ds")
    checked = check_det_dataset(str(data))
    assert checked["nc"] == len(names) - 1
    labels = list((tmp_path / "ds" / "labels").rglob("*.txt"))
    assert len(labels) == len(seed)
    lines = [line.split() for path in labels for line in path.read_text().splitlines()]
    dropped = sum(label == names[-1] for label in objects.column("label").to_pylist())
    assert len(lines) == objects.num_rows - dropped  # the label outside the class list is skipped
    for cls, *xywh in lines:
        assert 0 <= int(cls) < len(names) - 1 and all(0.0 < float(v) <= 1.0 for v in xywh)


def test_sam_trains_and_loads_back(seed, tmp_path):
    from engine.dataset.sources import load_rgb
    from schemas.geometry import box_array
    from specialists.sam import SamConfig, load_sam
    from specialists.training.sam import SamSample, SamTrainConfig, train_sam

    regions = seed.tables["regions"].filter(pc.equal(seed.tables["regions"].column("kind"), "object"))
    first = regions.column("image_id")[0].as_py()
    rows = regions.filter(pc.equal(regions.column("image_id"), first))
    sample = SamSample(load_rgb(seed.uris[first]), box_array(rows.column("box")), rows.column("mask").to_pylist())
    sam = load_sam(SamConfig(model_type="tiny"))
    stats = train_sam(sam, [sample], tmp_path, SamTrainConfig(steps=3, images_per_step=1))
    assert stats["steps"] == 3 and stats["final_loss"] > 0
    load_sam(SamConfig(checkpoint=str(tmp_path / "sam.pth"), model_type="tiny"))
    with pytest.raises(ValueError, match="no regions with masks"):
        train_sam(sam, [], tmp_path, SamTrainConfig(steps=1))


def test_confidence_is_calibrated_on_held_out_images():
    import pyarrow as pa

    from schemas import schema_for
    from specialists.training.calibration import calibrate_confidence
    from tests.rows import valid_row

    truth = pa.Table.from_pylist([valid_row("regions", region_id=f"t{k}", box=[k * 10, 0, k * 10 + 8, 8], label="square")
                                  for k in range(4)], schema=schema_for("regions"))
    right = [valid_row("regions", region_id=f"p{k}", box=[k * 10, 0, k * 10 + 8, 8], label="square", score=0.3)
             for k in range(4)]  # every object found, with the low scores of a briefly trained detector
    wrong = [valid_row("regions", region_id=f"w{k}", box=[50 + k, 50, 58 + k, 58], label="square", score=0.1)
             for k in range(6)]
    conf, f1 = calibrate_confidence(pa.Table.from_pylist(right + wrong, schema=schema_for("regions")), truth, ["img0"])
    assert 0.1 < conf <= 0.3 and f1 == 1.0


def test_yolo_trains_into_a_relative_folder(seed, tmp_path, monkeypatch):
    """ultralytics puts a relative project under its own runs folder; the trainer must not lose it."""
    import torch

    from specialists.training.yolo import YoloBudget, YoloTrainer

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    facts = YoloTrainer().train(seed, Path("models") / "yolo", YoloBudget(epochs=1, imgsz=64), None, "cpu")
    assert torch.get_num_threads() == threads  # ultralytics' own count is not left to the process
    assert (tmp_path / "models" / "yolo" / "best.pt").is_file()
    assert (tmp_path / "models" / "yolo" / "run" / "weights" / "last.pt").is_file()  # where a resume looks
    assert Path(facts["weights"]).is_file()


class Interrupted(Exception):
    pass


def test_an_interrupted_yolo_training_resumes_where_it_stopped(seed, tmp_path, monkeypatch):
    from ultralytics.engine.trainer import BaseTrainer

    from specialists.training.yolo import YoloTrainConfig, epochs_done, train_yolo, write_yolo_dataset

    objects = seed.tables["regions"]
    names = sorted(set(objects.filter(pc.equal(objects.column("kind"), "object")).column("label").to_pylist()))
    data = write_yolo_dataset(objects, seed.uris, seed.sizes, names, tmp_path / "ds")
    config = YoloTrainConfig(epochs=2, imgsz=64, batch=4)
    save = BaseTrainer.save_model

    def save_then_die(self):
        save(self)
        raise Interrupted  # the machine goes away after the first epoch's checkpoint

    monkeypatch.setattr(BaseTrainer, "save_model", save_then_die)
    with pytest.raises(Interrupted):
        train_yolo(data, tmp_path / "out", config)
    last = tmp_path / "out" / "run" / "weights" / "last.pt"
    assert epochs_done(last) == 1
    monkeypatch.setattr(BaseTrainer, "save_model", save)
    final = train_yolo(data, tmp_path / "out", config)
    assert epochs_done(last) is None and final.is_file()  # finished: the second epoch ran once
    epochs = [line.split(",")[0].strip() for line in (tmp_path / "out" / "run" / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]
    final.unlink()  # stopped after training, before its weights were copied: no training again
    monkeypatch.setattr(BaseTrainer, "train", lambda self: pytest.fail("trained a finished run again"))
    assert train_yolo(data, tmp_path / "out", config).is_file()


@pytest.mark.parametrize("config, margin, size", [({"crop_regions": 0.3}, 0.3, None), ({"crop_regions": None}, None, None),
                                                  ({}, None, None), (None, None, None),
                                                  ({"crop_regions": 0.2, "region_size": 112}, 0.2, 112)])
def test_florence2_describes_regions_on_crops_only_when_it_learnt_them_on_crops(config, margin, size):
    from specialists.training.registry import trainer_for

    manifest = {"weights": "ckpt", **({"config": config} if config is not None else {})}
    servings = trainer_for("florence2").serve(manifest, ["<CAPTION>", "<REGION_TO_DESCRIPTION>"], "cpu")
    regions = [s for s in servings if s.options["tasks"] == ["<REGION_TO_DESCRIPTION>"]]
    assert len(regions) == 1 and regions[0].options["region_margin"] == margin
    assert regions[0].options["region_size"] == size
    assert all("region_margin" not in s.options for s in servings if s is not regions[0])


@pytest.mark.parametrize("learnt, recipe, margin, size", [
    ({"crop_regions": 0.2, "region_size": 112}, {}, 0.2, 112),  # a refinement round goes on as the model learnt
    ({"crop_regions": 0.2, "region_size": 112}, {"crop_regions": 0.5}, 0.5, 112),  # the budget's own setting wins
    ({"crop_regions": None}, {}, None, None), (None, {}, None, None),  # whole images stay whole images
])
def test_a_florence2_fine_tuning_keeps_how_its_model_learnt_region_captions(learnt, recipe, margin, size):
    from specialists.training.florence2 import Florence2Budget
    from specialists.training.registry import trainer_for

    previous = {"weights": "ckpt", "key": "k", **({"config": learnt} if learnt is not None else {})}
    config = trainer_for("florence2")._config(Florence2Budget(steps=30, recipe=recipe), previous, "cpu")
    assert (config.crop_regions, config.region_size) == (margin, size)
    assert trainer_for("florence2").serve({"weights": "ckpt", "config": config.to_dict()}, ["<REGION_TO_DESCRIPTION>"],
                                          "cpu")[0].options["region_margin"] == margin  # and is served so


def test_a_florence2_fine_tuning_goes_on_reading_lines_under_the_loss_it_learnt_them_with():
    from specialists.florence2 import OCR
    from specialists.training.florence2 import Florence2Budget
    from specialists.training.registry import trainer_for

    trainer = trainer_for("florence2")
    previous = {"weights": "ckpt", "key": "k", "config": {"read_lines": 0.3, "example_mean": True}}
    config = trainer._config(Florence2Budget(steps=30), previous, "cpu")  # a refinement round's budget
    assert (config.read_lines, config.example_mean) == (0.3, True)
    served = trainer.serve({"weights": "ckpt", "config": config.to_dict()}, [OCR], "cpu")
    assert [(s.key, s.options["read_margin"]) for s in served] == [("florence2-regions", 0.3)]
    fresh = trainer._config(Florence2Budget(steps=30), {"weights": "ckpt", "key": "k", "config": {}}, "cpu")
    assert (fresh.read_lines, fresh.example_mean) == (None, False)


@pytest.mark.parametrize("learnt", [True, False])
def test_florence2_reads_the_boxes_crops_only_when_it_learnt_to_read_them(learnt):
    """A model trained with ``crop_ocr`` serves OCR beside its region captions, on the kept boxes'
    crops, and is measured so (given the gold boxes); another reads whole images."""
    from specialists.florence2 import OCR, REGION_TO_DESCRIPTION
    from specialists.training.registry import trainer_for

    trainer = trainer_for("florence2")
    manifest = {"weights": "ckpt", "config": {"crop_regions": 0.2, "region_size": 112, "crop_ocr": learnt}}
    servings = trainer.serve(manifest, ["<CAPTION>", OCR, REGION_TO_DESCRIPTION], "cpu")
    boxed = next(s for s in servings if s.key == "florence2-regions")
    whole = next(s for s in servings if not s.key)
    assert (OCR in boxed.options["tasks"], boxed.options["region_ocr"], OCR in whole.options["tasks"]) == (learnt, learnt, not learnt)
    assert (OCR in trainer.prompted(manifest)) == learnt
    only = trainer.serve(manifest, [OCR], "cpu")  # region captions gated out: it still reads the crops
    assert len(only) == 1 and only[0].options["tasks"] == [OCR] and only[0].options.get("region_ocr", False) == learnt


def test_florence2_that_learnt_to_read_lines_serves_its_ocr_as_a_reader_of_the_rounds_text_lines():
    """A model trained with ``read_lines`` serves OCR by reading the round's text lines again
    (``<OCR>`` with the margin it learnt, beside its region captions in the one specialist that
    takes the round's regions: two would each wait on the other's), is measured given the gold
    lines, and reads no whole image nor object crop for it; without OCR among its tasks it reads nothing."""
    from engine.round.annotate import stage_order
    from specialists.florence2 import GROUNDING, OCR, READ, REGION_TO_DESCRIPTION
    from specialists.registry import build
    from specialists.training.registry import trainer_for

    trainer = trainer_for("florence2")
    manifest = {"weights": "ckpt", "config": {"crop_regions": 0.2, "region_size": 112, "crop_ocr": True, "read_lines": 0.3}}
    servings = trainer.serve(manifest, ["<CAPTION>", OCR, REGION_TO_DESCRIPTION, GROUNDING], "cpu")
    regions = next(s for s in servings if s.key == "florence2-regions")
    assert regions.options["tasks"] == [REGION_TO_DESCRIPTION, READ] and regions.options["read_margin"] == 0.3
    assert not regions.options["region_ocr"] and all(OCR not in s.options["tasks"] for s in servings)
    built = {s.key or s.specialist: build(s.specialist, **s.options) for s in servings}
    assert built["florence2-regions"].needs == ("regions",)
    needs = {"rapidocr": (), **{k: tuple(b.needs) for k, b in built.items()}}
    stages = stage_order(needs, {"rapidocr": ("regions",), **{k: tuple(b.produces) for k, b in built.items()}})
    assert stages[0] == ["florence2", "rapidocr"] and "florence2-regions" in stages[1]  # reads the lines found before it
    assert OCR in trainer.prompted(manifest)
    assert all(READ not in s.options["tasks"] for s in trainer.serve(manifest, ["<CAPTION>", REGION_TO_DESCRIPTION], "cpu"))
    only = trainer.serve(manifest, [OCR], "cpu")  # region captions gated out: it still reads the lines
    assert [(s.options["tasks"], s.options.get("region_margin")) for s in only] == [([READ], None)]


def test_gold_boxes_give_readers_the_gold_lines_without_their_text(small_world):
    from engine.dataset.store import Store
    from engine.evaluation.measure import gold_boxes

    gold = Store(small_world.gold)
    truth = gold.read("regions").to_pylist()
    given = gold_boxes(gold).tables["regions"].to_pylist()
    assert sorted((r["region_id"], r["kind"]) for r in given) == \
        sorted((r["region_id"], r["kind"]) for r in truth if r["kind"] in ("object", "ocr"))
    assert any(r["kind"] == "ocr" for r in given)
    assert all(r["label"] is None for r in given if r["kind"] == "ocr")
    labels = {r["region_id"]: r["label"] for r in truth}
    assert all(r["label"] == labels[r["region_id"]] and r["mask"] is None and r["score"] == 1.0 for r in given if r["kind"] == "object")


def test_florence2_chooses_its_box_floor_on_calibration_images_and_is_served_with_it(tiny_florence2, seed):
    """Its ``<OD>`` floor, from its boxes on held-out truth, holds for its object boxes in the round's
    filter (not for its region captions); a model without ``<OD>`` has none."""
    from engine.loop.serving import round_filters
    from specialists.training.calibration import GRID
    from specialists.training.registry import trainer_for

    trainer = trainer_for("florence2")
    data = seed.only(seed.ids()[:3])
    manifest = {"weights": str(tiny_florence2), "tasks": ["<OD>", "<CAPTION>", "<REGION_TO_DESCRIPTION>"]}
    found = trainer.calibrate(manifest, data, "cpu")
    assert found["conf"] in GRID and found["calibration"]["images"] == 3 and 0.0 <= found["calibration"]["f1"] <= 1.0
    servings = trainer.serve({**manifest, **found}, ["<OD>", "<CAPTION>", "<REGION_TO_DESCRIPTION>"], "cpu")
    assert round_filters(servings).regions.min_score_by_specialist == {"florence2/object": found["conf"]}
    gated_out = trainer.serve({**manifest, **found}, ["<CAPTION>", "<REGION_TO_DESCRIPTION>"], "cpu")
    assert all(s.min_score is None for s in gated_out)  # its boxes are not served: no floor for the rest
    assert trainer.calibrate({**manifest, "tasks": ["<CAPTION>"]}, data, "cpu") == {}
    assert trainer.serve(manifest, ["<OD>"], "cpu")[0].min_score is None  # never calibrated: the round's own floor
