"""Region captions judged by the detector's label of their box (``filters.captions``)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from filters.captions import CaptionCheckConfig, caption_conflicts
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig, filter_annotations
from tests.filters.test_regions import region
from tests.rows import table_of

BOX = (10.0, 10.0, 40.0, 40.0)
CHECK = CaptionCheckConfig(judges=("yolo",), vocabulary=("car", "tree", "sign", "house", "bus"))


def caption(rid, text, box=BOX, image="a", specialist="florence2"):
    return region(rid, box, label=text, image=image, specialist=specialist, kind="region_caption")


PARSER = PhraseParser()


def kept_captions(rows, config=CHECK):
    decision = caption_conflicts(table_of("regions", rows), config, PARSER)
    return [r["label"] for r, reason in zip(rows, decision.reasons) if r["kind"] == "region_caption" and reason is None], decision


@pytest.mark.parametrize("text, kept", [
    ("a large red car", True),                      # its subject is the box's label
    ("Two cars by the road", True),                 # plural, capitalised
    ("a large black sign that says FARM", False),   # its subject is another category
    ("a small green trees", False),                 # a plural of another category
    ("a large black sign that says CAR", False),    # the quoted text is no subject
    ("a small blue object", True),                  # its subject is no category: nothing to judge
    ("a car next to a tree", True),                 # another category beside its subject
    ("a tree next to a car", False),                # ... but the subject is what it describes
    ("a man riding a bus", True),                   # man is no category: the bus is context
    ("a bushy thing", True),                        # "bus" inside a word is not the word
])
def test_a_caption_is_judged_by_the_label_of_its_box(text, kept):
    found, decision = kept_captions([region("o1", BOX, label="car"), caption("c1", text)])
    assert (found == [text]) is kept
    if not kept:
        assert decision.reasons[1].startswith("caption_conflict: '") and "on a car box of yolo" in decision.reasons[1]
    assert decision.reasons[0] is None  # objects are never dropped here


def test_only_a_judge_covering_the_same_box_in_the_same_image_judges():
    rows = [region("o1", BOX, label="car"), region("o2", (100.0, 100.0, 140.0, 140.0), label="tree", image="b"),
            caption("c1", "a tall tree", box=(12.0, 12.0, 60.0, 60.0)),      # IoU under 0.9 with the car
            caption("c2", "a tall tree", image="c"),                          # no judge on its image
            caption("c3", "a red car", box=(100.0, 100.0, 140.0, 140.0), image="b")]  # on the tree's box
    found, _ = kept_captions(rows)
    assert found == ["a tall tree", "a tall tree"]


def test_labels_of_other_specialists_and_an_unconfigured_check_judge_nothing():
    rows = [region("o1", BOX, label="car", specialist="gold-boxes"), caption("c1", "a tall tree")]
    assert kept_captions(rows)[0] == ["a tall tree"]
    rows = [region("o1", BOX, label="car"), caption("c1", "a tall tree")]
    assert kept_captions(rows, CaptionCheckConfig())[0] == ["a tall tree"]


def test_a_label_seen_in_the_batch_joins_the_vocabulary():
    rows = [region("o1", BOX, label="car"), region("o2", (100.0, 100.0, 140.0, 140.0), label="kite"),
            caption("c1", "a red kite")]
    assert kept_captions(rows, CaptionCheckConfig(judges=("yolo",)))[0] == []


def test_the_pipeline_drops_conflicting_captions_into_rejected_with_their_row():
    rows = table_of("regions", [region("o1", BOX, label="car"), caption("c1", "a tall tree"), caption("c2", "a red car")])
    out = filter_annotations({"regions": rows}, {"a": (100, 100)}, PhraseParser(), FilterConfig(captions=CHECK))
    assert sorted(out.kept["regions"].column("label").to_pylist()) == ["a red car", "car"]
    dropped = out.rejected.to_pylist()
    assert [(d["row_id"], d["filter"]) for d in dropped] == [("c1", "caption_check")]
    assert out.counts["caption_check"]["caption_conflict"] == 1


@pytest.mark.parametrize("bad", [{"iou": 0.0}, {"iou": 1.5}, {"vocabulary": ("car", "")}, {"vocabulary": ("  ",)}])
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        CaptionCheckConfig(**bad)


def test_the_loop_lets_a_detectors_labels_judge_and_a_round_config_keeps_the_check(tmp_path):
    from engine.loop.serving import round_config, round_filters
    from engine.round.config import RoundConfig
    from specialists.training.trainer import Serving

    servings = [Serving("yolo", {"weights": str(tmp_path / "best.pt"), "conf": 0.3}, min_score=0.3, labels=("tree", "car")),
                Serving("florence2", {"checkpoint": str(tmp_path / "f2"), "tasks": ["<REGION_TO_DESCRIPTION>"]})]
    config = round_config(servings)
    assert config.filters.captions == CaptionCheckConfig(judges=("yolo",), vocabulary=("car", "tree"))
    assert RoundConfig.from_dict(json.loads(config.to_json())).filters.captions == config.filters.captions
    assert round_filters([dataclasses.replace(servings[0], labels=())]).captions == CaptionCheckConfig()  # nothing judges
    reader = Serving("rapidocr", {"threads": 1}, reads_text=True)
    assert round_filters([*servings, reader]).captions.readers == ("rapidocr",)


READ = CaptionCheckConfig(readers=("rapidocr",))
SIGN = (10.0, 10.0, 90.0, 60.0)


def text_in(rid, text, box=(30.0, 25.0, 70.0, 45.0), specialist="rapidocr", image="a"):
    return region(rid, box, label=text, image=image, specialist=specialist, kind="ocr")


@pytest.mark.parametrize("caption_text, read, kept", [
    ("a large black sign that says FARM", "SALE", False),   # quotes a word the reader did not read
    ("a large black sign that says SALE", "Sale", True),    # the same word, whatever its case
    ('a sign that reads "bus stop"', "BUS STOP", True),     # words in quotation marks
    ('a sign that reads "farm"', "BUS STOP", False),
    ("a large black sign", "SALE", True),                   # quotes nothing: nothing to judge
    ("a sign that says NO PARKING", "PARKING", True),       # one quoted word read is enough
    ("A LARGE BLACK SIGN", "SALE", True),                   # all in capitals: capitals quote nothing
])
def test_quoted_text_is_judged_by_what_the_reader_found_inside_the_box(caption_text, read, kept):
    found, decision = kept_captions([caption("c1", caption_text, box=SIGN), text_in("t1", read)], READ)
    assert (found == [caption_text]) is kept
    if not kept:
        assert decision.reasons[0].startswith("caption_conflict: quotes ") and "rapidocr reads" in decision.reasons[0]


def test_text_outside_the_box_or_of_another_specialist_judges_nothing():
    outside = [caption("c1", "a sign that says FARM", box=SIGN), text_in("t1", "SALE", box=(100.0, 100.0, 140.0, 120.0))]
    assert kept_captions(outside, READ)[0] == ["a sign that says FARM"]
    other = [caption("c1", "a sign that says FARM", box=SIGN), text_in("t1", "SALE", specialist="florence2")]
    assert kept_captions(other, READ)[0] == ["a sign that says FARM"]
