"""Scene graphs: what is in an image, where, and how the objects relate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np



@dataclass
class SceneObject:
    """One object: what it is, where it was placed, and (after drawing) what of it is visible."""

    category: str
    colour: str
    size: str
    pattern: str
    extent: tuple[float, float, float, float]
    """Where it was drawn (x1, y1, x2, y2), occluded parts included."""
    text: str | None = None
    mask: np.ndarray | None = None
    """Visible pixels (bool, height x width)."""
    text_box: tuple[float, float, float, float] | None = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The visible part's box, in pixel xyxy (exclusive right and bottom edges)."""
        ys, xs = np.nonzero(self.mask)
        return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


@dataclass
class Scene:
    width: int
    height: int
    background: str
    background_colour: str
    objects: list[SceneObject] = field(default_factory=list)

    def relations(self) -> list[tuple[int, str, int]]:
        """(i, relation, j) for each pair of objects, from their visible centres."""
        out = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if i < j:
                    out.append((i, relation(a.centre, b.centre), j))
        return out

    def position(self, index: int) -> str:
        """Where an object sits in the image, in words (e.g. "top left", "centre")."""
        cx, cy = self.objects[index].centre
        col = ("left", "", "right")[min(int(3 * cx / self.width), 2)]
        row = ("top", "", "bottom")[min(int(3 * cy / self.height), 2)]
        return " ".join(p for p in (row, col) if p) or "centre"


def relation(a: tuple[float, float], b: tuple[float, float]) -> str:
    """How centre ``a`` lies relative to centre ``b``."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"
