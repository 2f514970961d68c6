"""Every drop on record: what a model's own floors remove before the filters is counted per
specialist and reason, and the floors' values travel with the round."""

from __future__ import annotations

import json

from engine.round.annotate import Decoded, run_specialist
from engine.round.run import run_round
from engine.round.runtime import Runtime
from specialists.registry import build
from tests.batches import signed_batch
from tests.engine.test_resume import config, dataset


def test_what_the_ocr_floor_removes_is_counted_exactly(small_world):
    batch = signed_batch(small_world, 4)
    decoded = Decoded(batch.image_ids, batch.images)
    everything = run_specialist(build("rapidocr", min_score=0.0), "rapidocr", decoded, [])
    strict = run_specialist(build("rapidocr", min_score=0.9), "rapidocr", decoded, [])
    below = strict.floored.get("text_score below min_score", 0)
    assert everything.tables["regions"].num_rows > strict.tables["regions"].num_rows
    assert everything.tables["regions"].num_rows == strict.tables["regions"].num_rows + below
    assert "text_score below min_score" not in everything.floored
    assert strict.floors == {"min_score": 0.9}
    assert min(strict.tables["regions"].column("score").to_pylist(), default=1.0) >= 0.9


def test_images_that_reach_max_det_are_counted_and_the_floors_are_on_record(small_world, yolo_weights, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("gold",))
    with Runtime(num_cpus=2):
        summary = run_round(store, 1, config(str(yolo_weights)))  # random weights, conf 0: every image has > 5 boxes
    images = store.read("images").num_rows
    assert summary.floors["yolo"] == {"conf": 0.0, "nms_iou": 0.7, "max_det": 5}
    assert summary.floored["yolo"] == {"max_det_reached (boxes beyond it were cut)": images}
    assert summary.raw["regions"] == 5 * images
    markers = [json.loads(p.read_text()) for p in (store.root / "_markers" / "round=1").glob("shard-*.json")]
    assert markers and all(m["floors"]["yolo"]["max_det"] == 5 for m in markers)
    assert sum(sum(m["floored"]["yolo"].values()) for m in markers) == images
