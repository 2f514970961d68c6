"""A round's annotations as Florence-2 training examples."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from engine.dataset.store import Store
from schemas import schema_for
from specialists.florence2_parse import parse_florence2
from specialists.training.florence2_examples import ALL_TASKS, build_examples
from tests.rows import valid_row


@pytest.fixture(scope="module")
def truth(small_world):
    store = Store(small_world.truth)
    return {t: store.read(t) for t in ("texts", "regions", "triplets")}, store.image_sizes()


def test_every_family_becomes_its_task(truth):
    tables, sizes = truth
    examples = build_examples(tables["texts"], tables["regions"], tables["triplets"], sizes)
    tasks = {e.task for e in examples}
    assert tasks == set(ALL_TASKS)
    n_images = len({r for r in tables["texts"].column("image_id").to_pylist()})
    assert sum(e.task == "<CAPTION>" for e in examples) == n_images
    assert sum(e.task == "<REGION_TO_DESCRIPTION>" for e in examples) == sum(
        k == "region_caption" for k in tables["regions"].column("kind").to_pylist())


def test_od_targets_round_trip_through_the_parser(truth):
    """Parsing a target gives back each object's label and box within one bin, in raster order."""
    tables, sizes = truth
    regions = tables["regions"].to_pylist()
    for example in build_examples(tables["texts"], tables["regions"], tables["triplets"], sizes, ("<OD>",))[:10]:
        objects = [r for r in regions if r["image_id"] == example.image_id and r["kind"] == "object"]
        items = parse_florence2(example.target, "<OD>", sizes[example.image_id])
        assert sorted(i.text for i in items) == sorted(o["label"] for o in objects)
        tops = [i.box[1] for i in items]
        assert tops == sorted(tops)
        w, h = sizes[example.image_id]
        for item in items:
            assert any(all(abs(a - b) <= s / 1000 + 1e-6 for a, b, s in zip(item.box, o["box"], (w, h, w, h)))
                       for o in objects if o["label"] == item.text)


def test_quantisation_never_emits_loc_1000():
    size = (320, 240)
    regions = pa.Table.from_pylist([valid_row("regions", image_id="img", box=[0.0, 0.0, 320.0, 240.0])],
                                   schema=schema_for("regions"))
    [example] = build_examples(schema_for("texts").empty_table(), regions, schema_for("triplets").empty_table(),
                               {"img": size}, ("<OD>",))
    assert re.findall(r"<loc_(\d+)>", example.target) == ["0", "0", "999", "999"]


def test_grounding_prompt_carries_the_caption_and_targets_its_phrases(truth):
    tables, sizes = truth
    examples = build_examples(tables["texts"], tables["regions"], tables["triplets"], sizes,
                              ("<CAPTION_TO_PHRASE_GROUNDING>",))
    assert examples
    brief = {r["image_id"]: r["text"] for r in tables["texts"].to_pylist() if r["granularity"] == "brief"}
    for example in examples:
        caption = example.prompt.removeprefix("<CAPTION_TO_PHRASE_GROUNDING>")
        assert caption == brief[example.image_id]
        for phrase in re.split(r"(?:<loc_\d+>)+", example.target):
            assert phrase in caption


def test_unknown_task_and_unsized_images():
    empty = {t: schema_for(t).empty_table() for t in ("texts", "regions", "triplets")}
    with pytest.raises(ValueError, match="unknown Florence-2 training task"):
        build_examples(empty["texts"], empty["regions"], empty["triplets"], {}, ("<NOPE>",))
    regions = pa.Table.from_pylist([valid_row("regions", image_id="img")], schema=schema_for("regions"))
    assert build_examples(empty["texts"], regions, empty["triplets"], {}) == []
