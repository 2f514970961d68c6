"""A round's gold metrics: its grounders are measured given the gold descriptions (recall@1 as
Flickr30k Entities measures a grounder), on the round's own kept regions."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.dataset.store import Store
from engine.evaluation.round_quality import evaluate_round
from engine.round.config import RoundConfig, SpecialistSpec
from engine.round.run import record_round


def kept_objects(gold: Store, dx: float = 0.0) -> pa.Table:
    """The gold object boxes as a round's kept detections, moved ``dx`` box widths to the right."""
    regions = gold.read("regions")
    rows = regions.filter(pc.equal(regions.column("kind"), "object")).to_pylist()
    for r in rows:
        width = r["box"][2] - r["box"][0]
        r.update(box=[r["box"][0] + dx * width, r["box"][1], r["box"][2] + dx * width, r["box"][3]], round=1,
                 specialist="yolo", score=0.9, score_source="model_probability", mask=None)
    return pa.Table.from_pylist(rows, schema=regions.schema)


def a_round(root, gold: Store, specialists: tuple[SpecialistSpec, ...], regions: pa.Table) -> Store:
    store = Store(root, create=True)
    config = RoundConfig(specialists=specialists, splits=("gold",))
    with store.writer(1) as writer:
        writer.write("regions", "kept", regions)
        record_round(writer, "specialists", config.to_json(), "completed", dt.datetime.now(dt.timezone.utc))
    return store


def metrics(store: Store, gold: Store) -> dict[str, float | None]:
    return {r["metric"]: r["value"] for r in evaluate_round(store, 1, gold).to_pylist()}


@pytest.fixture
def detect_describe_ground(yolo_weights, tiny_florence2):
    return (SpecialistSpec("yolo", {"weights": str(yolo_weights)}),
            SpecialistSpec("florence2", {"checkpoint": str(tiny_florence2), "tasks": ["<CAPTION>"]}),
            SpecialistSpec("label-grounder"))


def test_the_rounds_grounder_grounds_the_gold_descriptions_on_the_rounds_boxes(small_world, detect_describe_ground,
                                                                               tmp_path):
    gold = Store(small_world.gold)
    right = metrics(a_round(tmp_path / "right", gold, detect_describe_ground, kept_objects(gold)), gold)
    off = metrics(a_round(tmp_path / "off", gold, detect_describe_ground, kept_objects(gold, dx=1.5)), gold)
    assert right["grounding_recall@1"] >= 0.8  # the right boxes, labelled: most phrases name one of them
    assert off["grounding_recall@1"] == 0.0  # the same phrases, on boxes beside their objects
    # the round kept no triplets of its own: the dataset's triplet recall says so, whatever its grounder can do
    assert right["triplet_recall"] == 0.0 and right["triplet_precision"] is None


def test_a_round_without_a_grounder_has_no_grounding_recall(small_world, detect_describe_ground, tmp_path):
    gold = Store(small_world.gold)
    found = metrics(a_round(tmp_path / "ds", gold, detect_describe_ground[:2], kept_objects(gold)), gold)
    assert found["grounding_recall@1"] is None and found["detection_f1"] == 1.0


def test_a_round_evaluated_where_its_grounder_is_gone_keeps_its_other_metrics(small_world, yolo_weights, tmp_path):
    gold = Store(small_world.gold)
    gone = str(tmp_path / "moved-away" / "florence2")
    specialists = (SpecialistSpec("yolo", {"weights": str(yolo_weights)}),
                   SpecialistSpec("florence2", {"checkpoint": gone, "tasks": ["<CAPTION>"]}),
                   SpecialistSpec("florence2", {"checkpoint": gone, "tasks": ["<CAPTION_TO_PHRASE_GROUNDING>"]},
                                  key="florence2-grounder"))
    found = metrics(a_round(tmp_path / "ds", gold, specialists, kept_objects(gold)), gold)
    assert found["grounding_recall@1"] is None and found["detection_f1"] == 1.0
