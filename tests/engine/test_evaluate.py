"""The evaluator on hand-made cases whose right answers are known, and on the world's gold truth."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pyarrow as pa
import pytest
from pycocoevalcap.cider.cider import Cider
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.store import Store
from engine.evaluation.evaluate import EvalConfig, Evaluator, normalise_phrase, tokens
from engine.evaluation.round_quality import evaluate_round
from schemas.masks import encode_rle
from tests.rows import table_of, valid_row

W, H = 100, 80


def obj(image, rid, label, box, score=None, kind="object", mask=None):
    return valid_row("regions", image_id=image, region_id=rid, kind=kind, label=label, box=box, mask=mask,
                     score=score, score_source="model_probability" if score is not None else "ground_truth")


GT_REGIONS = [
    obj("i1", "g1", "house", [10.0, 10.0, 40.0, 40.0]),
    obj("i1", "g2", "tree", [50.0, 20.0, 70.0, 60.0]),
    obj("i2", "g3", "car", [0.0, 0.0, 30.0, 20.0]),
    obj("i2", "g4", "house", [60.0, 40.0, 90.0, 70.0]),
]


@pytest.fixture
def truth(tmp_path):
    store = Store(tmp_path / "gold", create=True)
    images = [valid_row("images", image_id=i, width=W, height=H, split="gold") for i in ("i1", "i2")]
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", images))
        w.write("regions", 0, table_of("regions", GT_REGIONS))
    return store


def metrics(truth, regions=(), texts=(), triplets=(), grounded=None, **config):
    predictions = {"regions": table_of("regions", list(regions)), "texts": table_of("texts", list(texts)),
                   "triplets": table_of("triplets", list(triplets))}
    if grounded is not None:
        predictions["grounded"] = table_of("triplets", list(grounded))
    return {m.metric: m.value for m in Evaluator(truth, EvalConfig(**config)).evaluate(predictions)}


def shifted(rows, dx_fraction, score=0.9):
    out = []
    for k, r in enumerate(rows):
        x1, y1, x2, y2 = r["box"]
        dx = dx_fraction * (x2 - x1)
        out.append(obj(r["image_id"], f"p{k}", r["label"], [x1 + dx, y1, x2 + dx, y2], score=score))
    return out




def test_perfect_detections_score_one(truth):
    m = metrics(truth, shifted(GT_REGIONS, 0.0))
    assert (m["detection_precision"], m["detection_recall"], m["detection_f1"]) == (1.0, 1.0, 1.0)
    assert m["detection_map"] == pytest.approx(1.0) and m["detection_map50"] == pytest.approx(1.0)


def test_shift_by_a_fifth_of_the_width_loses_a_known_amount(truth):
    # IoU of a box with itself shifted by s of its width is (1 - s) / (1 + s) = 2/3 for s = 0.2:
    # a match at IoU 0.5, 0.55, 0.6 and 0.65, none at 0.7 .. 0.95, so COCO mAP = 4/10.
    m = metrics(truth, shifted(GT_REGIONS, 0.2))
    assert m["detection_f1"] == 1.0
    assert m["detection_map50"] == pytest.approx(1.0)
    assert m["detection_map"] == pytest.approx(0.4)
    assert metrics(truth, shifted(GT_REGIONS, 0.2), iou=0.7)["detection_f1"] == 0.0


def test_box_iou_is_the_mean_overlap_of_the_matched_pairs(truth):
    assert metrics(truth, shifted(GT_REGIONS, 0.0))["detection_box_iou"] == pytest.approx(1.0)
    assert metrics(truth, shifted(GT_REGIONS, 0.2))["detection_box_iou"] == pytest.approx(2 / 3)  # (1 - s) / (1 + s)
    # one box of four shifted by 0.2 and one missed: the three matched ones count, not the miss
    mixed = shifted(GT_REGIONS[:1], 0.2) + shifted(GT_REGIONS[1:3], 0.0)
    assert metrics(truth, mixed)["detection_box_iou"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert metrics(truth, [])["detection_box_iou"] is None


def test_missed_wrong_and_extra_boxes(truth):
    preds = shifted(GT_REGIONS[:2], 0.0)  # half of the truth found
    assert metrics(truth, preds)["detection_recall"] == 0.5
    assert metrics(truth, preds)["detection_precision"] == 1.0
    wrong = [{**p, "label": "boat"} for p in shifted(GT_REGIONS, 0.0)]
    assert metrics(truth, wrong)["detection_f1"] == 0.0
    extra = shifted(GT_REGIONS, 0.0) + [obj("i1", "x1", "star", [0.0, 50.0, 10.0, 60.0], score=0.1)]
    m = metrics(truth, extra)
    assert m["detection_precision"] == 0.8 and m["detection_recall"] == 1.0
    assert m["detection_f1"] == pytest.approx(2 * 0.8 / 1.8)


def test_unscored_predictions_get_no_map(truth):
    unscored = [{**p, "score": None, "score_source": "none"} for p in shifted(GT_REGIONS, 0.0)]
    m = metrics(truth, unscored)
    assert m["detection_f1"] == 1.0 and m["detection_map"] is None


def test_map_equals_pycocotools_called_directly(truth):
    rng = np.random.default_rng(0)
    preds = []
    for k, r in enumerate(GT_REGIONS * 2):
        jitter = rng.uniform(-6, 6, 4)
        preds.append(obj(r["image_id"], f"p{k}", r["label"], list(np.array(r["box"]) + jitter), score=float(rng.random())))
    ours = metrics(truth, preds)
    ids = {"i1": 1, "i2": 2}
    labels = {"house": 1, "tree": 2, "car": 3}
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1}, {"id": 2}], "categories": [{"id": v} for v in labels.values()],
        "annotations": [{"id": n + 1, "image_id": ids[r["image_id"]], "category_id": labels[r["label"]],
                         "bbox": xywh(r["box"]), "area": xywh(r["box"])[2] * xywh(r["box"])[3], "iscrowd": 0}
                        for n, r in enumerate(GT_REGIONS)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": ids[p["image_id"]], "category_id": labels[p["label"]], "bbox": xywh(p["box"]),
                          "score": p["score"]} for p in preds])
        e = COCOeval(gt, dt, "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
    assert ours["detection_map"] == pytest.approx(e.stats[0])
    assert ours["detection_map50"] == pytest.approx(e.stats[1])


def test_ocr_words(truth, tmp_path):
    store = Store(tmp_path / "gold2", create=True)
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", [valid_row("images", image_id="i1", width=W, height=H)]))
        w.write("regions", 0, table_of("regions", [obj("i1", "t1", "OPEN", [0.0, 0.0, 20.0, 10.0], kind="ocr")]))
    pred = [obj("i1", "p1", "OPEN SALE", [0.0, 0.0, 20.0, 10.0], score=0.5, kind="ocr")]
    m = metrics(store, pred)
    assert (m["ocr_word_precision"], m["ocr_word_recall"]) == (0.5, 1.0)
    assert m["ocr_word_f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert m["detection_f1"] is None  # no object truth, no object predictions: not measurable


def test_region_caption_words_count_only_where_boxes_match(tmp_path):
    store = Store(tmp_path / "gold3", create=True)
    gold = [obj("i1", "c1", "a small red car", [0.0, 0.0, 20.0, 10.0], kind="region_caption"),
            obj("i1", "c2", "a large blue tree", [50.0, 40.0, 90.0, 80.0], kind="region_caption")]
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", [valid_row("images", image_id="i1", width=W, height=H)]))
        w.write("regions", 0, table_of("regions", gold))
    right_box = obj("i1", "p1", "a small blue car", [1.0, 0.0, 20.0, 10.0], score=0.5, kind="region_caption")
    elsewhere = obj("i1", "p2", "a large blue tree", [0.0, 50.0, 20.0, 70.0], score=0.5, kind="region_caption")
    # 3 of the first caption's 4 words, on a box that matches; the second's words lie on no gold box
    assert metrics(store, [right_box, elsewhere])["region_caption_word_f1"] == pytest.approx(2 * 3 / (8 + 8))
    assert metrics(store, [right_box, elsewhere])["region_caption_object"] == 1.0  # the matched one names the car
    wrong = obj("i1", "p3", "a small red tree", [1.0, 0.0, 20.0, 10.0], score=0.5, kind="region_caption")
    assert metrics(store, [wrong])["region_caption_object"] == 0.0  # 3 of 4 words right, the object wrong
    assert metrics(store, [])["region_caption_word_f1"] == 0.0
    assert metrics(store, gold)["region_caption_word_f1"] == 1.0 and metrics(store, gold)["region_caption_object"] == 1.0
    assert metrics(store, gold)["region_caption_text"] is None  # no caption quotes text


def test_quoted_text_is_scored_against_the_images_text(tmp_path):
    store = Store(tmp_path / "gold4", create=True)
    sign = [0.0, 0.0, 40.0, 30.0]
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", [valid_row("images", image_id="i1", width=W, height=H)]))
        w.write("regions", 0, table_of("regions", [
            obj("i1", "c1", "a large gray sign that says SALE", sign, kind="region_caption"),
            obj("i1", "o1", "SALE", [10.0, 10.0, 30.0, 20.0], kind="ocr")]))
        w.write("texts", 0, table_of("texts", [valid_row("texts", image_id="i1", text_id="g", granularity="detailed",
                                                         text="A gray sign that says SALE.", score=None,
                                                         score_source="ground_truth")]))
    caption = lambda text: obj("i1", "p1", text, sign, score=0.5, kind="region_caption")  # noqa: E731
    assert metrics(store, [caption("a large black sign that says SALE")])["region_caption_text"] == 1.0
    assert metrics(store, [caption("a large gray sign that says FARM")])["region_caption_text"] == 0.0
    assert metrics(store, [caption("a large gray sign")])["region_caption_text"] is None
    describe = lambda text: [valid_row("texts", image_id="i1", text_id="p", granularity="detailed", text=text)]  # noqa: E731
    assert metrics(store, texts=describe('A sign that reads "sale" stands by the road.'))["detailed.quoted_text"] == 1.0
    assert metrics(store, texts=describe("A sign that says FARM stands by the road."))["detailed.quoted_text"] == 0.0
    assert metrics(store, texts=describe("A SIGN BY THE ROAD."))["detailed.quoted_text"] is None  # shouting quotes nothing


def test_descriptions_and_mentions(truth, tmp_path):
    store = Store(tmp_path / "gold3", create=True)
    gt_text = "a red house next to a green tree"
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", [valid_row("images", image_id="i1", width=W, height=H)]))
        w.write("regions", 0, table_of("regions", GT_REGIONS[:2]))
        w.write("texts", 0, table_of("texts", [valid_row("texts", image_id="i1", text_id="g", text=gt_text, score=None, score_source="ground_truth")]))
    perfect = metrics(store, texts=[valid_row("texts", image_id="i1", text_id="p", text=gt_text.upper() + ".")])
    assert perfect["brief.bleu4"] == pytest.approx(1.0) and perfect["brief.rouge_l"] == pytest.approx(1.0)
    refs = {"i1": [" ".join(tokens(gt_text))]}
    assert perfect["brief.cider"] == pytest.approx(Cider().compute_score(refs, refs)[0])
    assert perfect["brief.object_recall"] == 1.0 and perfect["brief.hallucination"] == 0.0
    assert perfect["brief.coverage"] == 1.0 and perfect["detailed.coverage"] == 0.0
    partial = metrics(store, texts=[valid_row("texts", image_id="i1", text_id="p", text="two houses and a car")])
    assert partial["brief.object_recall"] == 0.5  # house of {house, tree}
    assert partial["brief.hallucination"] == 0.5  # car of {house, car}
    assert partial["brief.bleu4"] < 0.1


def test_grounding_recall_at_one(truth, tmp_path):
    store = Store(tmp_path / "gold4", create=True)
    gt = [valid_row("triplets", image_id="i1", triplet_id="g1", text="A red house", phrase="A red house",
                    span_start=0, span_end=11, box=[10.0, 10.0, 40.0, 40.0], score=None, score_source="ground_truth")]
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", [valid_row("images", image_id="i1", width=W, height=H)]))
        w.write("triplets", 0, table_of("triplets", gt))

    def pred(tid, box, score):
        return valid_row("triplets", image_id="i1", triplet_id=tid, text="the red house", phrase="the red house",
                         span_start=0, span_end=13, box=box, score=score)

    right, wrong = [10.0, 10.0, 40.0, 40.0], [60.0, 40.0, 90.0, 70.0]
    best_right, best_wrong = [pred("a", right, 0.9), pred("b", wrong, 0.1)], [pred("a", right, 0.1), pred("b", wrong, 0.9)]
    assert metrics(store, grounded=best_right)["grounding_recall@1"] == 1.0
    assert metrics(store, grounded=best_wrong)["grounding_recall@1"] == 0.0
    assert normalise_phrase("The  Red, house!") == "red house"
    # the round's own triplets are triplet recall; grounding recall@1 reads only what was grounded given the truth's texts
    found = metrics(store, triplets=best_right, grounded=best_wrong)
    assert found["triplet_recall"] == 1.0 and found["grounding_recall@1"] == 0.0
    assert metrics(store, triplets=best_right)["grounding_recall@1"] is None


def test_triplet_precision_judges_the_predicted_triplets(truth):
    """Each predicted triplet whose phrase names a category is right when its box is on a truth
    object of that category; phrases that name none are not judged."""
    def pred(tid, image, phrase, box):
        return valid_row("triplets", image_id=image, triplet_id=tid, text=phrase, phrase=phrase,
                         span_start=0, span_end=len(phrase), box=box, score=0.5)

    house, tree, car = GT_REGIONS[0]["box"], GT_REGIONS[1]["box"], GT_REGIONS[2]["box"]
    rows = [pred("a", "i1", "a red house", house),    # right
            pred("b", "i1", "a tall tree", house),    # a tree's phrase on the house
            pred("c", "i2", "two cars", car),         # plural names the category: right
            pred("d", "i1", "something blue", tree)]  # names no category: not judged
    assert metrics(truth, triplets=rows)["triplet_precision"] == pytest.approx(2 / 3)
    assert metrics(truth, triplets=rows[:1])["triplet_precision"] == 1.0
    assert metrics(truth, triplets=[pred("e", "i1", "a car", tree)])["triplet_precision"] == 0.0
    assert metrics(truth, triplets=rows[3:])["triplet_precision"] is None


def test_mask_iou_is_over_the_masks_made_and_coverage_counts_the_matched_objects_left_without_one(tmp_path):
    store = Store(tmp_path / "masked", create=True)
    full = np.zeros((H, W), bool)
    full[10:40, 10:40] = True  # the house's box, filled
    left = full.copy()
    left[:, 25:] = False  # its left half: IoU 1/2
    boxes = [[10.0, 10.0, 40.0, 40.0], [50.0, 20.0, 70.0, 60.0], [0.0, 50.0, 30.0, 75.0]]
    truth = [obj("i1", f"g{k}", "house", b, mask=encode_rle(full) if k == 0 else encode_rle(_box_mask(b)))
             for k, b in enumerate(boxes)]
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", [valid_row("images", image_id="i1", width=W, height=H, split="gold")]))
        w.write("regions", 0, table_of("regions", truth))
    found = [obj("i1", "p0", "house", boxes[0], score=0.9, mask=encode_rle(left)),
             obj("i1", "p1", "house", boxes[1], score=0.9, mask=encode_rle(_box_mask(boxes[1]))),
             obj("i1", "p2", "house", boxes[2], score=0.9)]  # matched, no mask
    m = {x.metric: x for x in Evaluator(store).evaluate({"regions": table_of("regions", found)})}
    assert m["mask_iou"].value == pytest.approx((0.5 + 1.0) / 2)
    assert m["mask_coverage"].value == pytest.approx(2 / 3) and m["mask_coverage"].units.measured == 1
    unmatched = found[:2] + [obj("i1", "p2", "house", [80.0, 0.0, 99.0, 9.0], score=0.9)]
    assert {x.metric: x.value for x in Evaluator(store).evaluate({"regions": table_of("regions", unmatched)})}[
        "mask_coverage"] == 1.0  # a missed object is detection's loss, not the segmenter's


def _box_mask(box):
    m = np.zeros((H, W), bool)
    m[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = True
    return m


def test_evaluating_a_sample_of_the_truths_images(truth):
    """``images`` restricts the truth too: what the sample holds is all there is to find."""
    found_i1 = {"regions": table_of("regions", [dict(r, score=0.9) for r in GT_REGIONS if r["image_id"] == "i1"])}
    whole = {m.metric: m.value for m in Evaluator(truth).evaluate(found_i1)}
    sample = {m.metric: m.value for m in Evaluator(truth, images=["i1", "elsewhere"]).evaluate(found_i1)}
    assert whole["detection_recall"] == 0.5 and sample["detection_recall"] == 1.0


def test_world_truth_as_predictions_is_perfect(small_world):
    gold = Store(small_world.gold)
    predictions = {t: gold.read(t) for t in ("texts", "regions", "triplets")}
    m = {x.metric: x.value for x in Evaluator(gold).evaluate({**predictions, "grounded": predictions["triplets"]})}
    for key in ("detection_f1", "mask_iou", "mask_coverage", "ocr_word_precision", "ocr_word_recall", "ocr_word_f1",
                "region_caption_word_f1", "region_caption_object", "grounding_recall@1", "triplet_recall",
                "triplet_precision", "brief.rouge_l", "more_detailed.rouge_l", "brief.coverage"):
        assert m[key] == pytest.approx(1.0), key
    assert m["detailed.bleu4"] == pytest.approx(1.0)
    assert m["more_detailed.hallucination"] == 0.0


def test_predictions_outside_gold_are_ignored(truth):
    outside = [obj("elsewhere", "z", "house", [10.0, 10.0, 40.0, 40.0], score=0.9)]
    assert metrics(truth, shifted(GT_REGIONS, 0.0) + outside)["detection_precision"] == 1.0


def test_evaluate_round_writes_metrics_that_fld_metrics_shows(truth, tmp_path):
    data = Store(tmp_path / "ds", create=True)
    preds = table_of("regions", [{**p, "round": 2} for p in shifted(GT_REGIONS, 0.0)])
    with data.writer(2) as w:
        w.write("regions", 0, preds)
    table = evaluate_round(data, 2, truth)
    assert isinstance(table, pa.Table) and data.files("metrics", 2)
    result = CliRunner().invoke(app, ["metrics", "--data", str(data.root), "--json"])
    rows = {r["metric"]: r for r in __import__("json").loads(result.output)}
    assert rows["detection_f1"]["rounds"]["2"]["value"] == 1.0


def test_bad_eval_config():
    with pytest.raises(ValueError, match="iou"):
        EvalConfig(iou=1.5)


def test_per_image_units_add_up_to_each_metric(small_world):
    """The units behind an interval are the metric itself, split by image: their ratio of sums
    is the reported value, for a perfect and for a damaged prediction."""
    gold = Store(small_world.gold)
    regions = gold.read("regions")
    half = regions.slice(0, regions.num_rows // 2)
    texts = gold.read("texts")
    triplets = gold.read("triplets")
    for predictions in ({**{t: gold.read(t) for t in ("texts", "regions", "triplets")}, "grounded": triplets},
                        {"regions": half, "texts": texts.slice(0, texts.num_rows // 3),
                         "grounded": triplets.slice(0, triplets.num_rows // 2)}):
        found = Evaluator(gold).evaluate(predictions)
        with_units = [m for m in found if m.units is not None and m.value is not None]
        assert {m.metric for m in with_units} >= {"detection_f1", "detection_recall", "brief.cider", "grounding_recall@1",
                                                  "ocr_word_f1", "region_caption_word_f1"}
        for m in with_units:
            assert m.units.value == pytest.approx(m.value), m.key


def test_fld_evaluate_names_a_gold_folder_that_holds_no_truth(truth, tmp_path):
    data = Store(tmp_path / "ds", create=True)
    with data.writer(1) as w:
        w.write("regions", 0, table_of("regions", [{**p, "round": 1} for p in shifted(GT_REGIONS, 0.0)]))
    for gold in (tmp_path / "missing", tmp_path / "ds"):  # nothing there; a dataset, not a gold truth
        result = CliRunner().invoke(app, ["evaluate", "--gold", str(gold), "--data", str(data.root), "--round", "1"])
        assert result.exit_code == 1 and "--gold" in result.output and str(gold) in result.output.replace("\n", "")
    result = CliRunner().invoke(app, ["evaluate", "--gold", str(truth.root), "--data", str(data.root), "--round", "1"])
    assert result.exit_code == 0, result.output
