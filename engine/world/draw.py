"""Drawing scenes: each category is a few primitives (ellipses, rectangles, polygons), the main
part filled with the object's colour and pattern, the others with fixed colours; signs carry
their word in a font that ships with Pillow (no system font needed).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.world.scene import Scene, SceneObject
from engine.world.vocab import BACKGROUND_COLOURS, COLOURS

DARK = (60, 60, 60)
TRUNK = (110, 70, 35)
STEM = (50, 140, 50)
WHEEL = (20, 20, 20)
SAIL = (250, 250, 250)
POST = (120, 120, 120)
FLOWER_CENTRE = (250, 220, 60)
PRIMARY = None
"""Marks the part that takes the object's own colour and pattern."""


def _star(cx, cy, r, points=5, inner=0.45):
    out = []
    for k in range(points * 2):
        radius = r if k % 2 == 0 else r * inner
        angle = -math.pi / 2 + k * math.pi / points
        out.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return out


def _hexagon(cx, cy, rx, ry):
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 7)[:-1]]


def parts(obj: SceneObject) -> list[tuple[str, list, tuple[int, int, int] | None]]:
    """The primitives of an object, in drawing order: (shape, coordinates, fill or PRIMARY)."""
    x1, y1, x2, y2 = obj.extent
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    c = obj.category
    if c == "circle":
        return [("ellipse", [x1, y1, x2, y2], PRIMARY)]
    if c == "square":
        return [("rectangle", [x1, y1, x2, y2], PRIMARY)]
    if c == "triangle":
        return [("polygon", [(x1, y2), (cx, y1), (x2, y2)], PRIMARY)]
    if c == "star":
        return [("polygon", _star(cx, cy, min(w, h) / 2), PRIMARY)]
    if c == "diamond":
        return [("polygon", [(cx, y1), (x2, cy), (cx, y2), (x1, cy)], PRIMARY)]
    if c == "hexagon":
        return [("polygon", _hexagon(cx, cy, w / 2, h / 2), PRIMARY)]
    if c == "cross":
        t = w / 6
        return [("rectangle", [cx - t, y1, cx + t, y2], PRIMARY), ("rectangle", [x1, cy - t, x2, cy + t], PRIMARY)]
    if c == "house":
        return [
            ("rectangle", [x1 + 0.08 * w, y1 + 0.42 * h, x2 - 0.08 * w, y2], PRIMARY),
            ("polygon", [(x1, y1 + 0.45 * h), (cx, y1), (x2, y1 + 0.45 * h)], DARK),
            ("rectangle", [cx - 0.1 * w, y1 + 0.7 * h, cx + 0.1 * w, y2], DARK),
        ]
    if c == "tree":
        return [
            ("rectangle", [cx - 0.12 * w, y1 + 0.55 * h, cx + 0.12 * w, y2], TRUNK),
            ("ellipse", [x1, y1, x2, y1 + 0.7 * h], PRIMARY),
        ]
    if c == "car":
        d = min(0.24 * w, 0.42 * h)  # wheel diameter
        return [
            ("rectangle", [x1 + 0.22 * w, y1, x2 - 0.25 * w, y1 + 0.4 * h], PRIMARY),
            ("rectangle", [x1, y1 + 0.35 * h, x2, y1 + 0.8 * h], PRIMARY),
            ("ellipse", [x1 + 0.12 * w, y2 - d, x1 + 0.12 * w + d, y2], WHEEL),
            ("ellipse", [x2 - 0.12 * w - d, y2 - d, x2 - 0.12 * w, y2], WHEEL),
        ]
    if c == "flower":
        fy, pr = y1 + 0.3 * h, 0.2 * w
        petals = [
            ("ellipse", [cx + 1.1 * pr * math.cos(a) - pr, fy + 1.1 * pr * math.sin(a) - pr,
                         cx + 1.1 * pr * math.cos(a) + pr, fy + 1.1 * pr * math.sin(a) + pr], PRIMARY)
            for a in np.linspace(0, 2 * math.pi, 6)[:-1]
        ]
        return [("rectangle", [cx - 0.06 * w, fy, cx + 0.06 * w, y2], STEM), *petals,
                ("ellipse", [cx - 0.8 * pr, fy - 0.8 * pr, cx + 0.8 * pr, fy + 0.8 * pr], FLOWER_CENTRE)]
    if c == "boat":
        return [
            ("rectangle", [cx - 0.03 * w, y1, cx + 0.03 * w, y1 + 0.62 * h], DARK),
            ("polygon", [(cx + 0.05 * w, y1), (cx + 0.05 * w, y1 + 0.55 * h), (x2 - 0.1 * w, y1 + 0.55 * h)], SAIL),
            ("polygon", [(x1, y1 + 0.6 * h), (x2, y1 + 0.6 * h), (x2 - 0.15 * w, y2), (x1 + 0.15 * w, y2)], PRIMARY),
        ]
    if c == "sign":
        return [
            ("rectangle", [cx - 0.05 * w, y1 + 0.6 * h, cx + 0.05 * w, y2], POST),
            ("rectangle", [x1, y1, x2, y1 + 0.65 * h], PRIMARY),
        ]
    raise ValueError(f"no drawing for category {c!r}")


def _raster(shape: str, coords, width: int, height: int) -> np.ndarray:
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    if shape == "ellipse":
        draw.ellipse(coords, fill=255)
    elif shape == "rectangle":
        draw.rectangle(coords, fill=255)
    else:
        draw.polygon(coords, fill=255)
    return np.asarray(layer) > 0


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def sign_text_layout(obj: SceneObject) -> tuple[int, tuple[float, float], tuple[float, float, float, float]]:
    """Font size, drawing origin and the tight box of a sign's word, fitted to its board."""
    x1, y1, x2, y2 = obj.extent
    board_w, board_h = x2 - x1, 0.65 * (y2 - y1)
    size = max(8, int(board_h * 0.6))
    while size > 8:
        left, top, right, bottom = font(size).getbbox(obj.text)
        if right - left <= 0.86 * board_w and bottom - top <= 0.7 * board_h:
            break
        size -= 1
    left, top, right, bottom = font(size).getbbox(obj.text)
    ox = x1 + (board_w - (right - left)) / 2 - left
    oy = y1 + (board_h - (bottom - top)) / 2 - top
    return size, (ox, oy), (ox + left, oy + top, ox + right, oy + bottom)


def object_mask(obj: SceneObject, width: int, height: int):
    """The object's full mask (bool) and, for a sign, the box of its word."""
    mask = np.zeros((height, width), bool)
    for shape, coords, _ in parts(obj):
        mask |= _raster(shape, coords, width, height)
    text_box = sign_text_layout(obj)[2] if obj.text else None
    return mask, text_box


def _shade(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, np.float32)
    return rgb * 0.55 if rgb.mean() > 90 else np.minimum(rgb + 100, 255)


def _texture(obj: SceneObject, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    base = np.asarray(COLOURS[obj.colour], np.float32)
    if obj.pattern == "striped":
        alt = ((xs + ys) // 6) % 2 == 1
    elif obj.pattern == "dotted":
        alt = ((xs % 9 - 4) ** 2 + (ys % 9 - 4) ** 2) < 6
    elif obj.pattern == "checkered":
        alt = ((xs // 7) + (ys // 7)) % 2 == 1
    else:
        alt = np.zeros(len(xs), bool)
    out = np.tile(base, (len(xs), 1))
    out[alt] = _shade(base)
    return out


def background(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    h, w = scene.height, scene.width
    base = np.asarray(BACKGROUND_COLOURS[scene.background_colour], np.float32)
    canvas = np.tile(base, (h, w, 1))
    if scene.background == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = (xx * math.cos(angle) + yy * math.sin(angle)).astype(np.float32)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        canvas *= (0.7 + 0.3 * t)[..., None]
    elif scene.background == "noise":
        canvas += rng.normal(0, 14, (h, w, 1)).astype(np.float32)
    elif scene.background == "stripes":
        period = int(rng.integers(10, 24))
        axis = np.arange(w if rng.random() < 0.5 else h)
        band = ((axis // period) % 2 == 1).astype(np.float32) * -25
        canvas += band[None, :, None] if len(axis) == w else band[:, None, None]
    return canvas


def clutter(canvas: np.ndarray, rng: np.random.Generator, strokes: int) -> np.ndarray:
    """Thin random strokes in muted colours over the background (drawn before the objects)."""
    h, w = canvas.shape[:2]
    layer = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    for _ in range(strokes):
        points = [(float(rng.uniform(0, w)), float(rng.uniform(0, h)))]
        for _ in range(int(rng.integers(2, 5))):
            x, y = points[-1]
            angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(8, 40)
            points.append((x + length * math.cos(angle), y + length * math.sin(angle)))
        tone = rng.integers(70, 200, size=3)
        draw.line(points, fill=tuple(int(t) for t in tone), width=int(rng.integers(1, 4)))
    return np.asarray(layer, np.float32)


def render(scene: Scene, rng: np.random.Generator, strokes: int = 0) -> np.ndarray:
    """The scene as an RGB uint8 array (height x width x 3); later objects cover earlier ones,
    and all cover the background's ``strokes`` of clutter."""
    canvas = background(scene, rng)
    if strokes:
        canvas = clutter(canvas, rng, strokes)
    for obj in scene.objects:
        for shape, coords, fill in parts(obj):
            ys, xs = np.nonzero(_raster(shape, coords, scene.width, scene.height))
            canvas[ys, xs] = _texture(obj, ys, xs) if fill is PRIMARY else np.asarray(fill, np.float32)
        if obj.text:
            size, origin, _ = sign_text_layout(obj)
            ink = 20 if np.mean(COLOURS[obj.colour]) > 110 else 245
            layer = Image.new("L", (scene.width, scene.height), 0)
            ImageDraw.Draw(layer).text(origin, obj.text, fill=255, font=font(size))
            ys, xs = np.nonzero(np.asarray(layer) > 127)
            canvas[ys, xs] = ink
    return np.clip(canvas, 0, 255).astype(np.uint8)
