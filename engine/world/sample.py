"""Sampling scenes. A scene depends only on its generator, so image ``i`` of a world is the same
whoever draws it and in whatever order. Placement keeps every object at least ``min_visible``
visible and never covers a sign's word, so the truth never labels what the pixels do not show.
"""

from __future__ import annotations

import numpy as np

from engine.world.config import WorldConfig
from engine.world.draw import object_mask
from engine.world.scene import Scene, SceneObject
from engine.world.shift import Domain
from engine.world.vocab import (
    BACKGROUND_COLOURS,
    BACKGROUNDS,
    CATEGORIES,
    PATTERNS,
    SIGN_WORDS,
    SIZE_FRACTION,
    SIZES,
)

ASPECT = {"car": 1.7, "boat": 1.5, "sign": 1.4, "house": 0.95, "tree": 0.7, "flower": 0.6}
"""Width over height of each category's drawn extent (1.0 when not listed)."""
PLACEMENT_TRIES = 40


def _extent(rng: np.random.Generator, category: str, size: str, config: WorldConfig):
    lo, hi = SIZE_FRACTION[size]
    side = rng.uniform(lo, hi) * min(config.width, config.height)
    aspect = ASPECT.get(category, 1.0)
    w = min(side * np.sqrt(aspect), config.width - 4)
    h = min(side / np.sqrt(aspect), config.height - 4)
    x1 = rng.uniform(2, config.width - w - 2)
    y1 = rng.uniform(2, config.height - h - 2)
    return (float(x1), float(y1), float(x1 + w), float(y1 + h))


def _box_slice(box) -> tuple[slice, slice]:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return slice(max(y1 - 1, 0), y2 + 1), slice(max(x1 - 1, 0), x2 + 1)


def _keeps_others_visible(objects: list[SceneObject], full: list[np.ndarray], mask: np.ndarray,
                          min_visible: float) -> bool:
    for obj, whole in zip(objects, full):
        if obj.text_box is not None and mask[_box_slice(obj.text_box)].any():
            return False
        if np.count_nonzero(obj.mask & ~mask) < min_visible * np.count_nonzero(whole):
            return False
    return True


def sample_scene(rng: np.random.Generator, config: WorldConfig, domain: Domain | None = None) -> Scene:
    """``min_objects``..``max_objects`` objects of ``domain`` (default: the seed domain; fewer when
    no room is left), a sign drawn last."""
    domain = domain or config.domain("seed")
    scene = Scene(
        config.width,
        config.height,
        BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        list(BACKGROUND_COLOURS)[rng.integers(len(BACKGROUND_COLOURS))],
    )
    count = int(rng.integers(domain.min_objects, domain.max_objects + 1))
    with_sign = bool(rng.random() < config.sign_probability)
    plain = [c for c in CATEGORIES if c != "sign"]
    wanted = [plain[rng.integers(len(plain))] for _ in range(count - int(with_sign))]
    if with_sign:
        wanted.append("sign")
    full: list[np.ndarray] = []
    for category in wanted:
        is_sign = category == "sign"
        size = domain.draw_size(rng, SIZES[1:3] if is_sign else SIZES)
        colours = domain.colours[category]
        colour = colours[rng.integers(len(colours))]
        pattern = "solid" if is_sign else PATTERNS[rng.integers(len(PATTERNS))]
        text = SIGN_WORDS[rng.integers(len(SIGN_WORDS))] if is_sign else None
        for _ in range(PLACEMENT_TRIES):
            obj = SceneObject(category, colour, size, pattern, _extent(rng, category, size, config), text)
            mask, text_box = object_mask(obj, config.width, config.height)
            if mask.any() and _keeps_others_visible(scene.objects, full, mask, domain.min_visible):
                for other in scene.objects:
                    other.mask = other.mask & ~mask
                obj.mask, obj.text_box = mask, text_box
                scene.objects.append(obj)
                full.append(mask)
                break
    return scene
