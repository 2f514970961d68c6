"""Gates decide from gold quality which model serves each task, so a weak model cannot degrade the data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.loop.gates import GateConfig, decide, holders, rival_bars, served
from engine.loop.refine import gate_rows, round_config
from engine.loop.training import Trained


def model(name: str, folder: str, units: dict | None = None, **gold) -> Trained:
    manifest = {"name": name, "weights": f"/w/{folder}", "gold": gold, "imgsz": 256, "model_type": "tiny",
                "tasks": ["<OD>", "<CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>"] if name == "florence2" else [],
                "units": units or {}}
    return Trained(name, Path(folder), manifest)


F1, CIDER, GROUND = "region-text/detection_f1", "text/brief.cider", "text-phrase-region/grounding_recall@1"
CONFIG = GateConfig(floors={F1: 0.3, CIDER: 0.1, GROUND: 0.2, "region-text/mask_iou": 0.5}, tolerance=0.01)
DISTINCT, HALLUCINATION, RECALL = "text/brief.distinct", "text/brief.hallucination", "text/brief.object_recall"
SEES = {DISTINCT: 0.9, HALLUCINATION: 0.1, RECALL: 0.4}
"""What a description model that sees writes: distinct descriptions naming objects that are there."""


def test_a_better_candidate_replaces_the_incumbent_and_a_worse_one_does_not():
    old = model("yolo", "old", **{F1: 0.6})
    better, worse, close = model("yolo", "b", **{F1: 0.7}), model("yolo", "w", **{F1: 0.5}), model("yolo", "c", **{F1: 0.595})
    assert decide({"yolo": better}, {"yolo:<OD>": old}, CONFIG)["yolo:<OD>"][1] is better
    gate, chosen = decide({"yolo": worse}, {"yolo:<OD>": old}, CONFIG)["yolo:<OD>"]
    assert chosen is old and gate.chosen == "incumbent" and (gate.candidate, gate.incumbent) == (0.5, 0.6)
    assert decide({"yolo": close}, {"yolo:<OD>": old}, CONFIG)["yolo:<OD>"][1] is close  # within tolerance


def test_a_task_below_its_floor_is_left_out_but_its_best_model_is_remembered():
    weak = model("florence2", "f", **{F1: 0.05, CIDER: 0.4, GROUND: None, **SEES})
    gates = decide({"florence2": weak}, {}, CONFIG)
    assert gates["florence2:<OD>"][0].chosen == "none"
    assert gates["florence2:<CAPTION>"][0].chosen == "candidate"
    assert gates["florence2:<CAPTION_TO_PHRASE_GROUNDING>"][0].chosen == "none"  # not measurable: out
    assert set(served(gates)) == {"florence2:<CAPTION>"}
    assert holders(gates)["florence2:<OD>"] is weak  # next round's candidate must beat 0.05


def test_round_config_runs_only_what_passed_and_grounds_only_captions():
    yolo = model("yolo", "y", **{F1: 0.8})
    f2 = model("florence2", "f", **{F1: 0.1, CIDER: 0.3, GROUND: 0.5, **SEES})
    config = round_config(decide({"yolo": yolo, "florence2": f2}, {}, CONFIG))
    by_key = {s.key: s for s in config.specialists}
    assert set(by_key) == {"rapidocr", "yolo", "florence2", "florence2-grounder", "label-grounder"}
    assert by_key["florence2"].options["tasks"] == ["<CAPTION>"]  # its <OD> failed the floor
    assert by_key["yolo"].options["weights"] == "/w/y"
    no_captions = round_config(decide({"yolo": yolo, "florence2": model("florence2", "g", **{F1: 0.1, CIDER: 0.0, GROUND: 0.9, **SEES})}, {}, CONFIG))
    assert {s.key for s in no_captions.specialists} == {"rapidocr", "yolo"}  # nothing to ground


def test_gate_rows_record_the_decision():
    old = model("yolo", "old", **{F1: 0.6})
    table = gate_rows(decide({"yolo": model("yolo", "w", **{F1: 0.5})}, {"yolo:<OD>": old}, CONFIG), 3)
    rows = {r["metric"]: r["value"] for r in table.to_pylist()}
    assert rows == {"yolo:<OD>": 1.0, "yolo:<OD>.candidate": 0.5, "yolo:<OD>.incumbent": 0.6, "yolo:<OD>.trivial": None}


def test_a_captioner_must_beat_the_constant_description_whatever_the_floor():
    """A CIDEr floor of 0.1 that a constant sentence clears (0.36 on the shifted gold) is no gate."""
    trivial = dataclasses.replace(CONFIG, trivial={CIDER: 0.36, F1: 0.0})
    parrot = model("florence2", "p", **{F1: 0.0, CIDER: 0.36, GROUND: None, **SEES})
    gates = decide({"florence2": parrot}, {}, trivial)
    assert gates["florence2:<CAPTION>"][0].chosen == "none" and gates["florence2:<CAPTION>"][0].trivial == 0.36
    assert decide({"florence2": parrot}, {}, CONFIG)["florence2:<CAPTION>"][0].chosen == "candidate"
    seeing = model("florence2", "s", **{F1: 0.0, CIDER: 0.5, GROUND: None, **SEES})
    assert decide({"florence2": seeing}, {}, trivial)["florence2:<CAPTION>"][0].chosen == "candidate"


@pytest.mark.parametrize("flaw, why", [
    ({DISTINCT: 0.03}, "too few distinct descriptions"),  # one sentence for nearly every image
    ({DISTINCT: None}, "too few distinct descriptions"),  # not measured: not admitted
    ({HALLUCINATION: 0.61}, "names objects that are not there"),
    ({RECALL: 0.16}, "names no more of the objects than the trivial answer"),
])
def test_a_description_model_whose_cider_passes_is_still_refused_when_it_does_not_describe(flaw, why):
    """A collapsed captioner (4 distinct sentences for 159 images) once cleared its CIDEr gate."""
    config = dataclasses.replace(CONFIG, trivial={CIDER: 0.36, RECALL: 0.16, F1: 0.0})
    flawed = model("florence2", "x", **{F1: 0.0, CIDER: 0.5, GROUND: None, **SEES, **flaw})
    gate, holder = decide({"florence2": flawed}, {}, config)["florence2:<CAPTION>"]
    assert gate.chosen == "none" and gate.refused.startswith(why)
    assert holder is flawed  # remembered as the one to beat


def test_the_trivial_answers_are_learnt_from_the_seed_and_scored_on_gold(small_world):
    from engine.dataset.store import Store
    from engine.evaluation.trivial import box_prior, constant_texts, trivial_answers, trivial_measurements
    from engine.loop.gates import with_trivial

    truth, gold = Store(small_world.truth), Store(small_world.gold)
    box, label = box_prior(truth)
    assert 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0
    seed_texts = [r["text"] for r in truth.read("texts").to_pylist() if r["granularity"] == "brief"]
    assert constant_texts(truth)["brief"] in seed_texts
    found = trivial_answers(trivial_measurements(truth, gold))
    assert found["text/brief.coverage"] == 1.0 and 0.0 <= found["region-text/detection_f1"] < 0.5
    # one caption for every gold box shares some words (an article, a size) but far from all
    assert 0.0 < found["region-text/region_caption_word_f1"] < 0.6
    assert 0.0 <= found["region-text/ocr_word_f1"] < 0.6
    # every gold phrase grounded to the box prior: measured (a grounder must beat it), and rarely right
    assert 0.0 <= found["text-phrase-region/grounding_recall@1"] < 0.3
    assert with_trivial(truth, gold).trivial == found


def test_gate_config_validates():
    with pytest.raises(ValueError):
        GateConfig(tolerance=2.0)


def test_one_segmenter_a_round_the_better_on_gold():
    iou = "region-text/mask_iou"
    sam, grabcut = model("sam", "s", **{iou: 0.6}), model("grabcut", "g", **{iou: 0.9})
    grabcut.manifest["iterations"] = 3
    config = round_config(decide({"sam": sam}, {"grabcut:<SEG>": grabcut}, CONFIG))
    names = [s.name for s in config.specialists]
    assert "grabcut" in names and "sam" not in names
    better = model("sam", "s2", **{iou: 0.95})
    names = [s.name for s in round_config(decide({"sam": better}, {"grabcut:<SEG>": grabcut}, CONFIG)).specialists]
    assert "sam" in names and "grabcut" not in names


def per_image(values) -> dict:
    from engine.evaluation.noise import Units

    return Units.of({f"img{k:03d}": (float(v), 1.0) for k, v in enumerate(values)}).to_dict()


def test_a_model_must_beat_the_trivial_answer_beyond_the_noise_on_the_same_images():
    import numpy as np

    rng = np.random.default_rng(0)
    constant = rng.uniform(0.3, 0.5, 60)  # the constant description's CIDEr on each gold image
    noise = rng.normal(0.0, 0.4, 60)
    lucky = constant + 0.02 + (noise - noise.mean())  # ahead by 0.02 on average, all over the place per image
    config = dataclasses.replace(CONFIG, trivial={CIDER: float(constant.mean()), RECALL: 0.16},
                                 trivial_units={CIDER: per_image(constant)})
    close = model("florence2", "c", {CIDER: per_image(lucky)}, **{F1: 0.0, CIDER: float(lucky.mean()), GROUND: None, **SEES})
    gate = decide({"florence2": close}, {}, config)["florence2:<CAPTION>"][0]
    assert gate.candidate > gate.trivial  # ahead on the point value...
    assert gate.chosen == "none" and gate.refused.startswith("not beyond the noise of the trivial answer")
    ahead = constant + 0.3
    clear = model("florence2", "a", {CIDER: per_image(ahead)}, **{F1: 0.0, CIDER: float(ahead.mean()), GROUND: None, **SEES})
    assert decide({"florence2": clear}, {}, config)["florence2:<CAPTION>"][0].chosen == "candidate"


def test_florence2_reads_and_describes_regions_only_where_its_gates_pass():
    ocr, caps = "region-text/ocr_word_f1", "region-text/region_caption_word_f1"
    yolo = model("yolo", "y", **{F1: 0.8})
    f2 = model("florence2", "f", **{F1: 0.0, CIDER: 0.0, ocr: 0.7, caps: 0.6, "region-text/region_caption_object": 0.8})
    f2.manifest["tasks"] = ["<OD>", "<CAPTION>", "<OCR_WITH_REGION>", "<REGION_TO_DESCRIPTION>"]
    trivial = dataclasses.replace(CONFIG, trivial={ocr: 0.1, caps: 0.4})
    by_key = {s.key: s for s in round_config(decide({"yolo": yolo, "florence2": f2}, {}, trivial)).specialists}
    assert by_key["florence2"].options["tasks"] == ["<OCR_WITH_REGION>"]
    assert by_key["florence2-regions"].options["tasks"] == ["<REGION_TO_DESCRIPTION>"]  # describes YOLO's boxes
    parrot = dataclasses.replace(CONFIG, trivial={ocr: 0.1, caps: 0.6})  # no better than one caption for every box
    gates = decide({"yolo": yolo, "florence2": f2}, {}, parrot)
    assert gates["florence2:<REGION_TO_DESCRIPTION>"][0].chosen == "none"
    assert gates["florence2:<OCR_WITH_REGION>"][0].chosen == "candidate"
    # better words than the constant caption, but the wrong object for most boxes: refused
    f2.manifest["gold"]["region-text/region_caption_object"] = 0.11
    gate = decide({"yolo": yolo, "florence2": f2}, {}, trivial)["florence2:<REGION_TO_DESCRIPTION>"][0]
    assert gate.chosen == "none" and "wrong objects" in gate.refused


def test_a_far_weaker_second_detector_is_not_fused_with_the_first():
    yolo = model("yolo", "y", **{F1: 0.76})
    weak = model("florence2", "f", **{F1: 0.35, CIDER: 0.3, GROUND: None, **SEES})
    gates = decide({"yolo": yolo, "florence2": weak}, {}, CONFIG)
    gate = gates["florence2:<OD>"][0]
    assert gate.chosen == "none" and "weaker than yolo:" in gate.refused  # above its floor, but far below YOLO
    assert gates["yolo:<OD>"][0].chosen == "candidate" and gates["florence2:<CAPTION>"][0].chosen == "candidate"
    assert holders(gates)["florence2:<OD>"] is weak  # remembered: next round's candidate must beat it
    close = model("florence2", "c", **{F1: 0.755, CIDER: 0.3, GROUND: None, **SEES})
    both = decide({"yolo": yolo, "florence2": close}, {}, CONFIG)
    assert {"yolo:<OD>", "florence2:<OD>"} <= set(served(both))  # as good (within tolerance): both fused


def test_a_model_measured_after_its_rivals_stops_early_below_what_they_admit():
    iou = "region-text/mask_iou"
    yolo, weak_yolo = model("yolo", "y", **{F1: 0.76}), model("yolo", "w", **{F1: 0.2})
    grabcut = model("grabcut", "g", **{iou: 0.85})
    bars = rival_bars({"yolo": yolo}, CONFIG, {"grabcut:<SEG>": grabcut})
    assert bars == pytest.approx({F1: 0.75, iou: 0.85})  # fused detectors: within tolerance; one segmenter: at least as good
    assert rival_bars({"yolo": weak_yolo}, CONFIG) == {}  # a rival its gate refuses raises nothing
    assert rival_bars({"yolo": model("yolo", "o", **{F1: 0.5})}, CONFIG, {"yolo:<OD>": yolo}) == pytest.approx({F1: 0.75})
    stop = CONFIG.early_stop(bars)
    assert stop.bars[F1] == pytest.approx(0.75) and stop.bars[iou] == pytest.approx(0.85)
    assert stop.bars[CIDER] == CONFIG.bars()[CIDER]  # untouched where no rival serves the metric
    assert CONFIG.early_stop({F1: 0.01}).bars == CONFIG.early_stop().bars  # never lowered below the floor
    # what the early stop refuses, the gates refuse: Florence-2's <OD> far below the YOLO beside it
    f2 = model("florence2", "f", **{F1: 0.15, CIDER: 0.3, GROUND: None, **SEES})
    assert F1 in stop.bars and f2.gold[F1] < stop.bars[F1]
    assert decide({"yolo": yolo, "florence2": f2}, {}, CONFIG)["florence2:<OD>"][0].chosen == "none"
