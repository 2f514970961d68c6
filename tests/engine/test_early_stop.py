"""Early stop of a gold measurement: a task that cannot pass its gate on a sample of the gold images
is measured on that sample only; every other task is measured on every image, to the same numbers."""

from __future__ import annotations

import math

import pytest

from engine.dataset.store import Store
from engine.evaluation import noise
from engine.evaluation.evaluate import Measurement
from engine.evaluation.gold import GoldGuard
from engine.evaluation.measure import EarlyStop, gold_images
from engine.evaluation.noise import Units
from engine.loop.gates import GateConfig
from engine.loop.training import measure_on_gold, train_and_measure
from engine.loop.training_set import load_training_set
from specialists.training.registry import trainer_for
from specialists.training.sam import GrabCutBudget

GROUND = "text-phrase-region/grounding_recall@1"
F1 = "region-text/detection_f1"
CIDER = "text/brief.cider"
MASK = "region-text/mask_iou"
REGION_F1 = "region-text/region_caption_word_f1"


def measurement(key: str, per_image: dict[str, tuple[float, float]]) -> Measurement:
    family, metric = key.split("/")
    units = Units.of(per_image)
    return Measurement(family, metric, float(units.num.sum() / units.den.sum()), units)


def test_only_a_metric_whose_whole_interval_lies_below_its_bar_is_hopeless():
    low = measurement(GROUND, {f"i{k}": (0.0 if k % 10 else 1.0, 1.0) for k in range(40)})  # 0.1, interval well below 0.5
    high = measurement(F1, {f"i{k}": (1.0, 1.0) for k in range(40)})
    few = measurement(CIDER, {f"i{k}": (0.0, 1.0) for k in range(3)})  # too few images for an interval
    stop = EarlyStop({GROUND: 0.5, F1: 0.5, CIDER: 0.5})
    assert set(stop.hopeless([low, high, few])) == {GROUND}
    assert "below its gate's 0.500" in stop.hopeless([low])[GROUND]
    assert stop.hopeless([low]) and not EarlyStop({GROUND: 0.1}).hopeless([low])  # its interval holds 0.1


def test_the_sample_is_fixed_by_the_images_and_the_seed():
    ids = [f"img-{k:03d}" for k in range(100)]
    stop = EarlyStop({}, first=10)
    sample = stop.sample(ids)
    assert len(sample) == 10 and set(sample) <= set(ids)
    assert stop.sample(list(reversed(ids))) == sample
    assert EarlyStop({}, first=10, seed=1).sample(ids) != sample
    assert EarlyStop({}, first=100).sample(ids) is None  # no larger than the sample: measured whole


@pytest.mark.parametrize("bad", [dict(first=0), dict(bars={GROUND: math.nan}), dict(bars={GROUND: "0.2"})])
def test_bad_early_stop_settings_are_refused(bad):
    with pytest.raises(ValueError):
        EarlyStop(**{"bars": {}, **bad})


def test_a_gate_config_stops_below_its_floors_and_trivial_answers():
    config = GateConfig(trivial={CIDER: 0.5, F1: 0.05})
    bars = config.bars()
    assert bars[CIDER] == 0.5 and bars[F1] == 0.1 and bars["region-text/region_caption_object"] == 0.5
    assert config.early_stop().bars == bars and config.early_stop().first == 48
    assert GateConfig(early_stop_images=0).early_stop() is None
    with pytest.raises(ValueError, match="early_stop_images"):
        GateConfig(early_stop_images=-1)


def test_a_task_that_cannot_pass_is_measured_on_the_sample_and_the_others_on_every_image(
        small_world, tiny_florence2, monkeypatch):
    monkeypatch.setattr(noise, "MIN_IMAGES", 2)  # the small world has 6 gold images
    trainer = trainer_for("florence2")
    manifest = {"weights": str(tiny_florence2),
                "tasks": ["<CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>", "<OD>", "<REGION_TO_DESCRIPTION>"]}
    gold = Store(small_world.gold)
    whole = {m.key: m for m in measure_on_gold(trainer, manifest, gold)}
    # no grounder reaches 1.01; the region captioner, prompted beside it, goes on alone (given the
    # gold boxes but no longer the gold descriptions)
    stop = EarlyStop({GROUND: 1.01, F1: 0.0, CIDER: 0.0, REGION_F1: 0.0}, first=3)
    early = {m.key: m for m in measure_on_gold(trainer, manifest, gold, stop=stop)}
    sample = set(stop.sample(sorted(gold_images(gold))))
    assert set(early[GROUND].units.images) <= sample < set(whole[GROUND].units.images)
    for key in (F1, CIDER, REGION_F1):
        assert early[key].value == whole[key].value
        assert early[key].units.images == whole[key].units.images
    none_hopeless = {m.key: m.value for m in measure_on_gold(trainer, manifest, gold, stop=EarlyStop({GROUND: 0.0}, first=3))}
    assert none_hopeless == {k: m.value for k, m in whole.items()}


def test_a_model_measured_with_another_early_stop_is_measured_again(small_world, tmp_path, monkeypatch):
    monkeypatch.setattr(noise, "MIN_IMAGES", 2)
    gold = Store(small_world.gold)
    data = load_training_set(Store(small_world.truth), 0, ("seed",), GoldGuard.from_stores(gold))
    trainer, budget = trainer_for("grabcut"), GrabCutBudget()
    whole = train_and_measure(trainer, data, tmp_path, budget, gold)
    assert whole.manifest["early_stop"] is None
    assert train_and_measure(trainer, data, tmp_path, budget, gold).manifest == whole.manifest  # reused
    stop = EarlyStop({MASK: 1.01}, first=3)
    stopped = train_and_measure(trainer, data, tmp_path, budget, gold, stop=stop)
    assert stopped.manifest["early_stop"]["bars"] == {MASK: 1.01}
    assert len(stopped.units(MASK).images) <= 3 < len(whole.units(MASK).images)
    again = train_and_measure(trainer, data, tmp_path, budget, gold)
    assert again.manifest["early_stop"] is None and again.gold[MASK] == whole.gold[MASK]
