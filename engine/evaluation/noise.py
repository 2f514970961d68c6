"""How sure a gold metric is: 95% intervals by bootstrap over gold images, and whether a change
between two rounds lies within the noise (a paired bootstrap on the images both were measured on).

Every metric with an interval is a ratio of per-image sums, ``sum(num) / sum(den)`` over the gold
images (detection F1 is ``2 tp / (predicted + truth)``, CIDEr the mean of per-image scores, ...):
resampling images with replacement and recomputing the ratio gives its sampling distribution.
Corpus-level metrics (BLEU, COCO mAP) have none. A fixed generator makes intervals reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
MIN_IMAGES = 20
"""Fewer gold images than this (with something to measure) give no interval: it would mislead."""


@dataclass(frozen=True, eq=False)
class Units:
    """A metric's per-image numerators and denominators, by gold image id."""

    images: tuple[str, ...]
    num: np.ndarray
    den: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.num) == len(self.den):
            raise ValueError("units need one numerator and one denominator per image")

    @classmethod
    def of(cls, per_image: dict[str, tuple[float, float]]) -> Units:
        images = tuple(sorted(per_image))
        num = np.array([per_image[i][0] for i in images], np.float64)
        den = np.array([per_image[i][1] for i in images], np.float64)
        return cls(images, num, den)

    def to_dict(self) -> dict:
        """Plain JSON data (a manifest or a gate config keeps it)."""
        return {"images": list(self.images), "num": self.num.tolist(), "den": self.den.tolist()}

    @classmethod
    def from_dict(cls, data: dict | None) -> Units | None:
        if not data:
            return None
        return cls(tuple(data["images"]), np.asarray(data["num"], np.float64), np.asarray(data["den"], np.float64))

    @property
    def value(self) -> float | None:
        total = float(self.den.sum())
        return float(self.num.sum()) / total if total else None

    @property
    def measured(self) -> int:
        """Images that count (with a non-zero denominator)."""
        return int(np.count_nonzero(self.den))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def _weights(n: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _percentiles(samples: np.ndarray) -> Interval | None:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(low), float(high))


def interval(units: Units | None, resamples: int = RESAMPLES, seed: int = 0) -> Interval | None:
    """The metric's 95% bootstrap interval; None when fewer than ``MIN_IMAGES`` images count."""
    if units is None or units.measured < MIN_IMAGES:
        return None
    w = _weights(len(units.images), resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _percentiles((w @ units.num) / (w @ units.den))


def change_interval(before: Units | None, after: Units | None, resamples: int = RESAMPLES,
                    seed: int = 0) -> Interval | None:
    """95% interval of ``after - before`` resampling the images both were measured on together
    (paired: an image that is hard for one round is hard for the other)."""
    if before is None or after is None:
        return None
    common = sorted(set(before.images) & set(after.images))
    if len(common) < MIN_IMAGES:
        return None
    a, b = (_aligned(u, common) for u in (before, after))
    if min(np.count_nonzero(a[1]), np.count_nonzero(b[1])) < MIN_IMAGES:
        return None
    w = _weights(len(common), resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _percentiles((w @ b[0]) / (w @ b[1]) - (w @ a[0]) / (w @ a[1]))


def _aligned(units: Units, images: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {image: k for k, image in enumerate(units.images)}
    rows = np.array([index[i] for i in images])
    return units.num[rows], units.den[rows]


def within_noise(before: Units | None, after: Units | None) -> bool | None:
    """True when the change's interval holds 0 (no result), False when it does not, None when it
    cannot be told (no per-image units, or too few images)."""
    found = change_interval(before, after)
    return None if found is None else found.holds(0.0)
