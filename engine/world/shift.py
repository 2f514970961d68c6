"""Domain shift: how the user's own images (the ``pool`` and ``gold`` splits, the target domain)
differ from the curated data they start from (the ``seed`` and ``seed-gold`` splits).

A shift is a named preset of parameters, each validated against its range. It changes what is
drawn (more, smaller, more occluded objects; category-colour pairs the seed never shows; clutter
on the background) and how it is captured (blur, sensor noise, lighting, JPEG artefacts); the
truth stays exact in both domains. ``none`` draws today's single-domain world, bit for bit.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from engine.world.vocab import CATEGORIES, COLOURS

RANGES: dict[str, tuple[float, float]] = {
    "clutter": (0, 60),
    "extra_objects": (0, 8),
    "small_share": (0.0, 1.0),
    "min_visible": (0.1, 1.0),
    "blur": (0.0, 4.0),
    "noise": (0.0, 40.0),
    "light": (0.0, 0.6),
    "jpeg_quality": (0, 95),
    "held_out": (0.0, 0.8),
}
"""Each parameter's allowed range (both ends included)."""


@dataclass(frozen=True)
class Shift:
    """The target domain's parameters; every default leaves the seed domain as it is."""

    name: str = "none"
    clutter: int = 0
    """Random strokes drawn on the background, under the objects (never an object category)."""
    extra_objects: int = 0
    """Added to the world's object count range (at most 12 per image)."""
    small_share: float = 0.0
    """Probability that an object is small (0: sizes are uniform, as in the seed)."""
    min_visible: float = 1.0
    """Lowest visible share an occluded object may keep, when below the world's own (more occlusion)."""
    blur: float = 0.0
    """Gaussian blur radius in pixels."""
    noise: float = 0.0
    """Sensor noise: standard deviation per pixel and channel (0..255 scale)."""
    light: float = 0.0
    """Lighting change: brightness and contrast drawn within 1 +- light, plus a shadow gradient."""
    jpeg_quality: int = 0
    """Every target image is a JPEG at this quality (0: formats as in the seed)."""
    held_out: float = 0.0
    """Share of each category's colours that the seed domain never shows (the target shows all)."""

    def __post_init__(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"shift {self.name!r}: {name} must be within {lo}..{hi}, got {value!r}")
        if self.jpeg_quality and self.jpeg_quality < 10:
            raise ValueError(f"shift {self.name!r}: jpeg_quality must be 0 (off) or within 10..95, got {self.jpeg_quality}")

    @property
    def changes_pixels(self) -> bool:
        return bool(self.clutter or self.blur or self.noise or self.light or self.jpeg_quality)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Shift:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown shift parameter(s) {unknown}; known: {', '.join(sorted(known - {'name'}))}")
        return cls(**values)


SHIFTS: dict[str, Shift] = {
    "none": Shift(),
    "mild": Shift("mild", clutter=6, extra_objects=1, small_share=0.45, blur=0.6, noise=6.0, light=0.15,
                  jpeg_quality=60, held_out=0.2),
    "field": Shift("field", clutter=20, extra_objects=3, small_share=0.7, min_visible=0.3, blur=1.2, noise=12.0,
                   light=0.35, jpeg_quality=30, held_out=0.4),
    "harsh": Shift("harsh", clutter=30, extra_objects=4, small_share=0.75, min_visible=0.25, blur=1.6, noise=18.0,
                   light=0.45, jpeg_quality=20, held_out=0.5),
}
"""Named shifts. ``field`` (the default profile's) is the one measured to cost the bootstrapped
detector a clear part of its seed-domain quality; see docs/WORLD.md for the measurements."""


def shift_named(name: str, **overrides: Any) -> Shift:
    """A named shift, with some parameters set (``fld world make --shift field --shift-set blur=2``)."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}")
    known = {f.name for f in fields(Shift)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown shift parameter(s) {unknown}; known: {', '.join(sorted(known))}")
    return replace(SHIFTS[name], **overrides)


def parse_overrides(items: list[str]) -> dict[str, float | int]:
    """``["blur=2", "clutter=10"]`` -> ``{"blur": 2.0, "clutter": 10}`` (int where the field is)."""
    types = {f.name: f.type for f in fields(Shift)}
    out: dict[str, float | int] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in types or key == "name":
            raise ValueError(f"bad shift setting {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(k for k in types if k != 'name')}")
        whole = types[key] in ("int", int)
        try:
            out[key] = int(text) if whole else float(text)
        except ValueError:
            raise ValueError(f"bad shift setting {item!r}: {text!r} is not a {'whole ' if whole else ''}number") from None
    return out


@dataclass(frozen=True)
class Domain:
    """What one split's scenes are drawn from: the seed domain or the shifted target domain."""

    min_objects: int
    max_objects: int
    min_visible: float
    small_share: float
    colours: dict[str, tuple[str, ...]]
    """The colours each category may take here."""
    shift: Shift | None
    """The capture changes applied to the pixels (None: the seed domain's plain capture)."""

    def draw_size(self, rng: np.random.Generator, choices: tuple[str, ...]) -> str:
        if not self.small_share:
            return choices[rng.integers(len(choices))]
        others = [s for s in choices if s != "small"]
        if "small" not in choices:
            return others[rng.integers(len(others))]
        return "small" if rng.random() < self.small_share else others[rng.integers(len(others))]


def held_out_colours(seed: int, share: float) -> dict[str, tuple[str, ...]]:
    """Per category, the colours the seed domain never shows (a fixed draw per world seed)."""
    k = int(round(share * len(COLOURS)))
    if not k:
        return {c: () for c in CATEGORIES}
    rng = np.random.default_rng([seed, 2**31 + 1])
    names = list(COLOURS)
    return {c: tuple(sorted(names[i] for i in rng.choice(len(names), size=k, replace=False))) for c in CATEGORIES}


def domain_for(split: str, world_seed: int, min_objects: int, max_objects: int, min_visible: float,
               shift: Shift) -> Domain:
    """The seed domain (``seed``, ``seed-gold``) or the target domain (``pool``, ``gold``)."""
    held = held_out_colours(world_seed, shift.held_out)
    if split in ("seed", "seed-gold"):
        colours = {c: tuple(n for n in COLOURS if n not in held[c]) for c in CATEGORIES}
        return Domain(min_objects, max_objects, min_visible, 0.0, colours, None)
    colours = {c: tuple(COLOURS) for c in CATEGORIES}
    low = min(min_objects + shift.extra_objects, 12)
    high = min(max_objects + shift.extra_objects, 12)
    return Domain(low, high, min(min_visible, shift.min_visible), shift.small_share, colours,
                  shift if shift.changes_pixels else None)


def capture(pixels: np.ndarray, rng: np.random.Generator, shift: Shift) -> np.ndarray:
    """Lighting, blur and sensor noise of the target camera (JPEG comes at encoding)."""
    out = pixels.astype(np.float32)
    if shift.light:
        h, w = out.shape[:2]
        gain = rng.uniform(1 - shift.light, 1 + shift.light)
        contrast = rng.uniform(1 - shift.light, 1 + shift.light / 2)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = (xx * math.cos(angle) + yy * math.sin(angle)).astype(np.float32)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        shadow = 1 - shift.light * 0.8 * t
        mean = out.mean()
        out = ((out - mean) * contrast + mean) * gain * shadow[..., None]
    image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if shift.blur:
        image = image.filter(ImageFilter.GaussianBlur(shift.blur))
    out = np.asarray(image, np.float32)
    if shift.noise:
        out = out + rng.normal(0, shift.noise, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, jpeg: bool, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if jpeg else "PNG", **({"quality": quality} if jpeg else {}))
    return buffer.getvalue()

