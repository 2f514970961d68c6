"""Intervals by bootstrap over gold images, and changes between rounds judged against the noise."""

from __future__ import annotations

import numpy as np
import pytest

from engine.evaluation.noise import MIN_IMAGES, Units, change_interval, interval, within_noise


def units(num, den=None, prefix="img") -> Units:
    den = np.ones(len(num)) if den is None else den
    return Units(tuple(f"{prefix}{k:04d}" for k in range(len(num))), np.asarray(num, float), np.asarray(den, float))


def test_interval_holds_the_value_and_narrows_with_more_images():
    rng = np.random.default_rng(1)
    small, large = units(rng.random(40) < 0.3), units(rng.random(400) < 0.3)
    a, b = interval(small), interval(large)
    assert a.holds(small.value) and b.holds(large.value)
    assert (b.high - b.low) < (a.high - a.low)


def test_a_metric_every_image_agrees_on_has_no_spread():
    found = interval(units(np.full(50, 0.7)))
    assert found.low == pytest.approx(0.7) and found.high == pytest.approx(0.7)


def test_too_few_images_give_no_interval_rather_than_a_misleading_one():
    assert interval(units(np.ones(MIN_IMAGES - 1))) is None
    # images with nothing to measure (denominator 0) do not count
    assert interval(units(np.ones(MIN_IMAGES + 5), np.r_[np.ones(MIN_IMAGES - 1), np.zeros(6)])) is None


def test_ratio_of_sums_weights_images_by_their_denominator():
    u = units([1, 9], [2, 10])
    assert u.value == pytest.approx(10 / 12)


def test_units_need_one_numerator_and_denominator_per_image():
    with pytest.raises(ValueError, match="one numerator"):
        Units(("a", "b"), np.ones(2), np.ones(3))


def test_an_unchanged_round_is_within_the_noise_and_a_clear_gain_is_not():
    rng = np.random.default_rng(2)
    before = units(rng.random(150))
    assert within_noise(before, before) is True
    after = units(np.clip(before.num + 0.2, 0, None))
    assert within_noise(before, after) is False
    assert change_interval(before, after).holds(0.2)


def test_pairing_by_image_sees_a_small_consistent_gain_that_unpaired_intervals_hide():
    rng = np.random.default_rng(3)
    hardness = rng.random(150)
    before, after = units(hardness), units(hardness + 0.03)
    a, b = interval(before), interval(after)
    assert a.high > b.low  # the two rounds' own intervals overlap
    assert within_noise(before, after) is False  # but every image gained: paired, it is a result


def test_changes_are_paired_on_the_images_both_rounds_measured():
    before = units(np.zeros(60))
    after = Units(before.images[10:] + ("other",), np.ones(51), np.ones(51))
    found = change_interval(before, after)
    assert found.low == pytest.approx(1.0) and found.high == pytest.approx(1.0)
    assert change_interval(before, None) is None and within_noise(None, after) is None
