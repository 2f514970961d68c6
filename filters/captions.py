"""Region captions checked against the detector's label of their box: a cross-specialist filter.

A captioner that names another object than the detector gave the same box is usually the one
that is wrong: on the embedded world's gold (round 1, 151 images; ``docs/FLORENCE2_RECIPE.md``)
the zoo YOLO's label was right and Florence-2's caption wrong for 347 such boxes, the other way
round for 35; relabelling boxes by their captions lowered detection F1 at every threshold. So a
caption that names a category of the detectors' vocabulary other than its box's label, and not
that label, is dropped (``rejected`` keeps it). A caption that names no category, or names the
box's own label, stays; so does one with no judged box (no detector box at ``iou`` or more).

Category words count as written or capitalised (``car``, ``Cars``), so a sign's quoted text in
capitals (``that says STAR``) names nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filters.decision import Decision
from filters.regions import boxes_of
from schemas.geometry import box_iou


@dataclass(frozen=True)
class CaptionCheckConfig:
    judges: tuple[str, ...] = ()
    """Specialists whose object labels judge the region captions on their boxes; none: no check."""
    vocabulary: tuple[str, ...] = ()
    """The categories a caption may name (beside the judges' labels seen in the batch)."""
    iou: float = 0.9
    """How closely a judge's box must cover a caption's box to judge it (captions are made on the
    very boxes the detector proposed)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"iou must be within (0, 1], got {self.iou}")
        if any(not isinstance(w, str) or not w.strip() for w in self.vocabulary):
            raise ValueError(f"vocabulary words must be non-empty strings, got {list(self.vocabulary)}")


def category_pattern(category: str) -> re.Pattern:
    """The category as written or capitalised (a caption's first word), singular or plural."""
    forms = "|".join(re.escape(f) for f in dict.fromkeys((category, category[:1].upper() + category[1:])))
    return re.compile(rf"(?<![\w-])(?:{forms})(?:s|es)?(?![\w-])")


def named(text: str, patterns: dict[str, re.Pattern]) -> set[str]:
    """The categories ``text`` names."""
    return {c for c, p in patterns.items() if p.search(text)}


def caption_conflicts(rows: pa.Table, config: CaptionCheckConfig) -> Decision:
    """Drop region captions that name another category than the judge's label of their box."""
    n = rows.num_rows
    drop = np.zeros(n, bool)
    details: dict[int, str] = {}
    if not config.judges or n == 0:
        return Decision.from_mask("caption_check", drop, "")
    kinds = rows.column("kind").to_pylist()
    specialists = rows.column("specialist").to_pylist()
    labels = rows.column("label").to_pylist()
    images = rows.column("image_id").to_pylist()
    judges = [i for i in range(n) if kinds[i] == "object" and specialists[i] in config.judges and labels[i]]
    captions = [i for i in range(n) if kinds[i] == "region_caption" and labels[i]]
    if not judges or not captions:
        return Decision.from_mask("caption_check", drop, "")
    vocabulary = set(config.vocabulary) | {labels[i] for i in judges}
    patterns = {c: category_pattern(c) for c in vocabulary}
    boxes = boxes_of(rows)
    by_image: dict[str, list[int]] = {}
    for i in judges:
        by_image.setdefault(images[i], []).append(i)
    for c in captions:
        candidates = by_image.get(images[c], [])
        if not candidates:
            continue
        iou = box_iou(boxes[[c]], boxes[candidates])[0]
        best = int(np.argmax(iou))
        if iou[best] < config.iou:
            continue
        label = labels[candidates[best]]
        said = named(labels[c], patterns)
        if said and label not in said:
            drop[c] = True
            details[c] = f"names {', '.join(sorted(said))} on a {label} box of {specialists[candidates[best]]}"
    return Decision.from_mask("caption_check", drop, lambda i: f"caption_conflict: {details[i]}")

