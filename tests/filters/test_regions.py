"""Region filters, fusion, triplet filters, the noise simulator and the whole pipeline."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from filters.decision import apply
from filters.fusion import REREAD, FusionConfig, fuse, unconfirmed
from filters.noise import NoiseConfig, simulate
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig, filter_annotations
from filters.regions import RegionFilterConfig, blank, boxes_of, confidence, geometry, nms, per_image_cap
from filters.triplets import TripletFilterConfig, contained, phrase_quality, triplet_confidence
from schemas import validate_table
from tests.rows import table_of, valid_row

SIZES = {"a": (100, 80), "b": (50, 50)}


def region(rid, box, score=0.9, label="house", image="a", specialist="yolo", kind="object", mask=None):
    return valid_row("regions", image_id=image, region_id=rid, box=box, score=score, label=label,
                     specialist=specialist, kind=kind, mask=mask)


def codes(decision):
    return [r.split(":")[0] if r else None for r in decision.reasons]


@pytest.mark.parametrize(
    "box, image, code",
    [
        ([10.0, 10.0, 40.0, 40.0], "a", None),
        ([10.0, 10.0, 10.0, 40.0], "a", "degenerate"),  # zero area
        ([10.0, 10.0, float("nan"), 40.0], "a", "degenerate"),
        ([60.0, 60.0, 120.0, 79.0], "a", "outside_image"),
        ([-10.0, 0.0, 20.0, 20.0], "a", "outside_image"),
        ([10.0, 10.0, 13.0, 13.0], "a", "tiny"),  # 9 px
        ([0.0, 0.0, 100.0, 80.0], "a", "near_full_image"),
        ([10.0, 10.0, 40.0, 40.0], "zzz", "unknown_image"),
    ],
)
def test_geometry(box, image, code):
    rows = table_of("regions", [region("r", box, image=image)])
    assert codes(geometry(rows, SIZES, RegionFilterConfig())) == [code]


@pytest.mark.parametrize(
    "score, specialist, code",
    [(0.9, "yolo", None), (0.1, "yolo", "low_confidence"), (0.1, "ocr", None), (float("nan"), "yolo", "invalid_score"),
     (-0.5, "yolo", "invalid_score"), (None, "yolo", None)],
)
def test_confidence(score, specialist, code):
    rows = table_of("regions", [region("r", [0.0, 0.0, 9.0, 9.0], score=score, specialist=specialist)])
    config = RegionFilterConfig(min_score=0.3, min_score_by_specialist={"ocr": 0.05})
    assert codes(confidence(rows, config)) == [code]
    if score is None:
        assert codes(confidence(rows, RegionFilterConfig(require_score=True))) == ["no_score"]


def test_a_floor_for_one_kind_of_a_specialists_regions_leaves_its_other_kinds_at_theirs():
    """Florence-2's calibrated floor holds for its boxes, not for its region captions or text."""
    rows = table_of("regions", [region("box", [0.0, 0.0, 9.0, 9.0], 0.1, specialist="florence2"),
                                region("caption", [0.0, 0.0, 9.0, 9.0], 0.1, specialist="florence2", kind="region_caption"),
                                region("low box", [0.0, 0.0, 9.0, 9.0], 0.03, specialist="florence2"),
                                region("text", [0.0, 0.0, 9.0, 9.0], 0.2, specialist="florence2", kind="ocr"),
                                region("yolo box", [0.0, 0.0, 9.0, 9.0], 0.1)])
    config = RegionFilterConfig(min_score=0.25, min_score_by_specialist={"florence2/object": 0.04, "florence2": 0.15})
    assert codes(confidence(rows, config)) == [None, "low_confidence", "low_confidence", None, "low_confidence"]
    assert "0.030 < 0.04" in confidence(rows, config).reasons[2]


def test_nms_within_specialist_and_label_across_images_in_one_call():
    rows = table_of("regions", [
        region("hi", [10.0, 10.0, 50.0, 50.0], 0.9),
        region("lo", [12.0, 12.0, 52.0, 52.0], 0.5),  # suppressed by hi
        region("other_label", [12.0, 12.0, 52.0, 52.0], 0.5, label="tree"),
        region("other_specialist", [12.0, 12.0, 52.0, 52.0], 0.5, specialist="dino"),
        region("other_image", [12.0, 12.0, 52.0, 52.0], 0.5, image="b"),
        region("far", [60.0, 10.0, 90.0, 40.0], 0.4),
    ])
    assert codes(nms(rows, RegionFilterConfig(nms_iou=0.5))) == [None, "suppressed", None, None, None, None]


def test_all_ones_scores_still_suppress_duplicates():
    rows = table_of("regions", [region(f"r{i}", [10.0 + i, 10.0, 50.0 + i, 50.0], 1.0) for i in range(5)])
    assert codes(nms(rows, RegionFilterConfig())).count(None) == 1


def test_per_image_cap_keeps_the_best():
    rng = np.random.default_rng(0)
    scores = rng.random(50)
    rows = table_of("regions", [region(f"r{i}", [0.0, 0.0, 9.0, 9.0], float(s)) for i, s in enumerate(scores)])
    decision = per_image_cap(rows, RegionFilterConfig(max_per_image=5))
    kept = np.flatnonzero(decision.keep)
    assert sorted(kept) == sorted(np.argsort(-scores)[:5])


def test_millions_of_boxes_on_one_image_are_bounded():
    n = 1_000_000
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 90, (n, 2)).astype(np.float32)
    boxes = np.c_[xy, xy + 5]
    base = table_of("regions", [region("r", [0.0, 0.0, 1.0, 1.0])])
    columns = {name: pa.repeat(base.column(name)[0], n) for name in base.column_names}
    columns["region_id"] = pa.array(np.arange(n).astype(str))
    columns["box"] = pa.FixedSizeListArray.from_arrays(pa.array(boxes.reshape(-1)), 4)
    columns["score"] = pa.array(rng.random(n).astype(np.float32))
    rows = pa.table(columns)
    capped, _ = apply("regions", rows, per_image_cap(rows, RegionFilterConfig(max_per_image=1000)))
    assert capped.num_rows == 1000
    assert nms(capped, RegionFilterConfig()).keep.sum() <= 1000


def test_blank_crops():
    pixels = np.full((80, 100, 3), 128, np.uint8)
    pixels[40:, 50:] = np.random.default_rng(0).integers(0, 255, (40, 50, 3))
    rows = table_of("regions", [region("flat", [0.0, 0.0, 40.0, 30.0]), region("busy", [55.0, 45.0, 95.0, 75.0]),
                                region("no_pixels", [0.0, 0.0, 9.0, 9.0], image="b")])
    assert codes(blank(rows, {"a": pixels}, RegionFilterConfig())) == ["blank", None, None]


def test_fusion_merges_across_specialists_and_keeps_members():
    rows = table_of("regions", [
        region("y1", [10.0, 10.0, 50.0, 50.0], 0.9, label="house", specialist="yolo"),
        region("d1", [12.0, 11.0, 52.0, 49.0], 0.4, label="house", specialist="dino"),
        region("f1", [11.0, 12.0, 51.0, 51.0], 0.7, label="building", specialist="florence2"),
        region("y2", [60.0, 10.0, 90.0, 40.0], 0.8, label="tree", specialist="yolo"),
        region("y3", [12.0, 10.0, 50.0, 50.0], 0.3, label="house", specialist="yolo"),  # same specialist: not merged into y1's cluster
    ])
    fused, decision = fuse(rows, FusionConfig(iou=0.5))
    assert fused.num_rows == 1
    row = fused.to_pylist()[0]
    assert row["label"] == "house" and row["score"] == 3.0 and row["score_source"] == "agreement_count"
    assert {m["specialist"] for m in row["members"]} == {"yolo", "dino", "florence2"}
    assert {m["label"] for m in row["members"]} == {"house", "building"}
    assert codes(decision) == ["merged", "merged", "merged", None, None]
    assert validate_table("regions", fused) == []
    _, strict = fuse(rows, FusionConfig(min_agreement=2))
    assert codes(strict)[3:] == ["no_agreement", "no_agreement"]


def test_a_text_line_read_again_keeps_the_first_readers_text_and_quad():
    quad = [10.0, 10.0, 50.0, 12.0, 50.0, 22.0, 10.0, 20.0]
    rows = table_of("regions", [
        valid_row("regions", image_id="a", region_id="r1", box=[10.0, 10.0, 50.0, 22.0], quad=quad, score=0.9,
                  label="OPEN", specialist="rapidocr", kind="ocr"),
        valid_row("regions", image_id="a", region_id=f"r1{REREAD}", box=[10.0, 10.0, 50.0, 22.0], quad=quad, score=0.6,
                  label="OPFN", specialist="florence2", kind="ocr"),
    ])
    fused, _ = fuse(rows, FusionConfig(kinds=("object", "ocr"), priority=("yolo", "rapidocr", "florence2")))
    row = fused.to_pylist()[0]
    assert row["label"] == "OPEN" and row["quad"] == quad  # a tie of two readings: the first reader's
    assert [(m["specialist"], m["label"]) for m in row["members"]] == [("rapidocr", "OPEN"), ("florence2", "OPFN")]


def test_a_reread_goes_where_the_line_it_read_goes():
    """A reader shown a line the round drops (RapidOCR's "囍" on an icon: not English) does not keep
    its own guess there; a line the round keeps is fused with its re-read."""
    def line(rid, label, specialist, image="a"):
        return valid_row("regions", image_id=image, region_id=rid, box=[10.0, 10.0, 50.0, 22.0], score=0.9,
                         label=label, specialist=specialist, kind="ocr")

    rows = table_of("regions", [line("icon", "囍", "rapidocr"), line(f"icon{REREAD}", "ZOO", "florence2"),
                                line("sign", "OPEN", "rapidocr", "b"), line(f"sign{REREAD}", "OPEN", "florence2", "b")])
    assert codes(unconfirmed(rows, rows)) == [None, None, None, None]
    assert codes(unconfirmed(rows.slice(1, 3), rows)) == ["unconfirmed", None, None]
    config = FilterConfig(fusion=FusionConfig(kinds=("object", "ocr"), priority=("rapidocr", "florence2")))
    out = filter_annotations({"regions": rows}, SIZES, PhraseParser(), config)
    kept = out.kept["regions"].to_pylist()
    assert [(r["image_id"], r["label"], r["specialist"]) for r in kept] == [("b", "OPEN", "fusion")]
    dropped = {r["row_id"]: r["reason"].split(":")[0] for r in out.rejected.to_pylist()}
    assert dropped["icon"] == "not_english" and dropped[f"icon{REREAD}"] == "unconfirmed"
    # a line given without its text (a gold line as the gate's prompt) is the reader's to read
    given = table_of("regions", [line("gold-line", None, "gold-boxes"), line(f"gold-line{REREAD}", "OPEN", "florence2")])
    kept = filter_annotations({"regions": given}, SIZES, PhraseParser(), config).kept["regions"].to_pylist()
    assert [(r["region_id"], r["label"]) for r in kept] == [(f"gold-line{REREAD}", "OPEN")]


def test_fusion_of_an_empty_table():
    fused, decision = fuse(table_of("regions", []))
    assert fused.num_rows == 0 and decision.reasons == []


def triplet(tid, phrase, start, end, text="A red house and the image", box=(10.0, 10.0, 40.0, 40.0), score=0.9,
            phrase_score=0.9, region_id="r1"):
    return valid_row("triplets", image_id="a", triplet_id=tid, text=text, phrase=phrase, span_start=start,
                     span_end=end, box=list(box), score=score, phrase_score=phrase_score, region_id=region_id)


@pytest.mark.parametrize(
    "phrase, code",
    [("A red house", None), ("the image", "blacklisted"), ("it", "blacklisted"), ("Some", "blacklisted"),
     ("a group", "blacklisted"), ("the top left", "abstract"), ("a striped background", "abstract")],
)
def test_phrase_quality(phrase, code):
    text = phrase
    rows = table_of("triplets", [triplet("t", phrase, 0, len(phrase), text=text)])
    assert codes(phrase_quality(rows, TripletFilterConfig())) == [code]


def test_triplet_confidence_and_containment():
    text = "A red house and the image"
    rows = table_of("triplets", [
        triplet("whole", "A red house", 0, 11, text),
        triplet("part", "red house", 2, 11, text),
        triplet("low_phrase", "A red house", 0, 11, text, phrase_score=0.05, region_id="r2"),
        triplet("low_box", "A red house", 0, 11, text, score=0.1, region_id="r3"),
    ])
    assert codes(triplet_confidence(rows, TripletFilterConfig())) == [None, None, "low_phrase_confidence", "low_box_confidence"]
    assert codes(contained(rows)) == [None, "contained", None, None]


def test_noise_simulator_makes_the_defects_it_promises():
    truth = table_of("regions", [region(f"g{i}", [10.0 * i, 10.0, 10.0 * i + 9, 30.0], label=l)
                                 for i, l in enumerate(["house", "tree", "car", "boat"] * 2)])
    clean = simulate(truth, {"a": (100, 80)}, NoiseConfig(miss_rate=0, duplicate_rate=0, jitter=0,
                                                          wrong_label_rate=0, false_positives_per_image=0))
    assert clean.column("box").to_pylist() == truth.column("box").to_pylist()
    assert validate_table("regions", clean, {"a": (100, 80)}) == []
    size = {"a": (100, 80)}
    only = lambda **kw: NoiseConfig(**{"miss_rate": 0, "duplicate_rate": 0, "jitter": 0, "wrong_label_rate": 0,  # noqa: E731
                                       "false_positives_per_image": 0, "seed": 3, **kw})
    assert simulate(truth, size, only(miss_rate=1.0)).num_rows == 0  # missed objects
    dupes = simulate(truth, size, only(duplicate_rate=0.9))
    assert dupes.num_rows > truth.num_rows  # duplicates: the same boxes again, same labels, lower scores
    assert set(map(tuple, dupes.column("box").to_pylist())) == set(map(tuple, truth.column("box").to_pylist()))
    wrong = simulate(truth, size, only(wrong_label_rate=1.0))
    assert all(a != b for a, b in zip(wrong.column("label").to_pylist(), truth.column("label").to_pylist()))
    moved = simulate(truth, size, only(jitter=0.1))
    assert moved.num_rows == truth.num_rows and moved.column("box").to_pylist() != truth.column("box").to_pylist()
    assert np.abs(boxes_of(moved) - boxes_of(truth)).max() < 10  # jitter of a tenth of a ~10-20 px box
    extra = simulate(truth, size, only(false_positives_per_image=5))
    fp = extra.num_rows - truth.num_rows
    assert fp > 0 and np.mean(extra.column("score").to_numpy()[-fp:]) < 0.5  # false positives score low
    noisy = simulate(truth, size, NoiseConfig(duplicate_rate=0.9, false_positives_per_image=5, seed=3))
    assert validate_table("regions", noisy, size) == []


def test_pipeline_keeps_every_drop_with_its_row(small_world):
    from engine.dataset.store import Store

    gold = Store(small_world.gold)
    sizes = gold.image_sizes()
    objects = gold.read("regions")
    objects = objects.filter(pa.compute.equal(objects.column("kind"), "object"))
    noisy = simulate(objects, sizes, NoiseConfig(seed=5))
    texts = gold.read("texts")
    triplets = gold.read("triplets")
    out = filter_annotations({"regions": noisy, "texts": texts, "triplets": triplets}, sizes, PhraseParser())
    kept, rejected = out.kept["regions"], out.rejected
    region_drops = rejected.filter(pa.compute.equal(rejected.column("table"), "regions"))
    merged = sum(1 for r in region_drops.column("reason").to_pylist() if r.startswith("merged"))
    assert kept.num_rows + region_drops.num_rows - out.counts["fusion"]["fused"] == noisy.num_rows
    assert merged == 0  # one specialist: nothing to fuse
    first = json.loads(region_drops.column("row")[0].as_py())
    assert first["region_id"] == region_drops.column("row_id")[0].as_py()
    assert validate_table("rejected", rejected) == []
    assert out.counts["text"]["kept"] == texts.num_rows  # the world's descriptions pass the text filter
    phrase_drops = rejected.filter(pa.compute.equal(rejected.column("table"), "triplets"))
    assert phrase_drops.num_rows < triplets.num_rows * 0.2


def test_grouped_nms_agrees_with_torchvision_batched_nms():
    import torch
    from torchvision.ops import batched_nms

    from filters.regions import grouped_nms

    rng = np.random.default_rng(4)
    n = 3000
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.c_[xy, xy + rng.uniform(5, 60, (n, 2))]
    scores = rng.random(n)
    groups = rng.integers(0, 300, n)
    ours = grouped_nms(boxes, scores, groups, 0.5, chunk=64)
    theirs = np.zeros(n, bool)
    theirs[batched_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(),
                       torch.from_numpy(groups), 0.5).numpy()] = True
    assert (ours == theirs).all()
