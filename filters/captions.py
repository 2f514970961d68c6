"""Region captions checked against what other specialists say of their box: a cross-specialist filter.

**Objects.** A captioner that names another object than the detector gave the same box is
usually the one that is wrong: on the embedded world's gold (round 1, 151 images;
``bench/caption_agreement.py``) the zoo YOLO's label was right and Florence-2's caption wrong for
347 such boxes, the other way round for 35, and relabelling boxes by their captions lowered
detection F1 at every threshold. So a caption that names a category of the detectors' vocabulary
other than its box's label, and not that label, is dropped. Category words count as written or
capitalised (``car``, ``Cars``), so a sign's text in capitals (``that says STAR``) names nothing.

**Text.** A caption that quotes text (a word in capitals of two letters or more, or words in
quotation marks) on a box inside which an OCR reader found text, none of whose words it quotes,
is dropped too: in ``make run``'s third round 82 of 96 sign captions said "FARM" (the world's
signs say one of 30 words, FARM on 1 in 25), and RapidOCR read another word inside 79 of them.

A caption that names no category and quotes nothing, or has no judged box, stays. Every drop
is kept whole in ``rejected`` (``caption_conflict``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filters.decision import Decision
from filters.regions import boxes_of
from schemas.geometry import box_iou

QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<![\w-])([A-Z][A-Z0-9]+)(?![\w-])")
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class CaptionCheckConfig:
    judges: tuple[str, ...] = ()
    """Specialists whose object labels judge the region captions on their boxes."""
    vocabulary: tuple[str, ...] = ()
    """The categories a caption may name (beside the judges' labels seen in the batch)."""
    readers: tuple[str, ...] = ()
    """Specialists whose OCR text judges the text a caption quotes. Neither judges nor readers: no check."""
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


def quoted(text: str) -> set[str]:
    """The words ``text`` quotes (in quotation marks, or in capitals), upper-cased."""
    return {w.upper() for m in QUOTED.finditer(text) for part in m.groups() if part for w in WORD.findall(part)}


def _centres_inside(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(len(outer), len(inner)): whether each inner box's centre lies in each outer box."""
    cx, cy = (inner[:, 0] + inner[:, 2]) / 2, (inner[:, 1] + inner[:, 3]) / 2
    return ((outer[:, None, 0] <= cx) & (cx <= outer[:, None, 2]) & (outer[:, None, 1] <= cy) & (cy <= outer[:, None, 3]))


def caption_conflicts(rows: pa.Table, config: CaptionCheckConfig) -> Decision:
    """Drop region captions that name another category than the judge's label of their box, or
    quote text that the OCR read inside their box does not hold."""
    n = rows.num_rows
    drop = np.zeros(n, bool)
    details: dict[int, str] = {}
    if not (config.judges or config.readers) or n == 0:
        return Decision.from_mask("caption_check", drop, "")
    kinds = rows.column("kind").to_pylist()
    specialists = rows.column("specialist").to_pylist()
    labels = rows.column("label").to_pylist()
    images = rows.column("image_id").to_pylist()
    captions = [i for i in range(n) if kinds[i] == "region_caption" and labels[i]]
    judges = [i for i in range(n) if kinds[i] == "object" and specialists[i] in config.judges and labels[i]]
    readers = [i for i in range(n) if kinds[i] == "ocr" and specialists[i] in config.readers and labels[i]]
    if not captions or not (judges or readers):
        return Decision.from_mask("caption_check", drop, "")
    patterns = {c: category_pattern(c) for c in set(config.vocabulary) | {labels[i] for i in judges}}
    boxes = boxes_of(rows)
    judges_of, readers_of = _by_image(judges, images), _by_image(readers, images)
    for c in captions:
        if (candidates := judges_of.get(images[c])):
            iou = box_iou(boxes[[c]], boxes[candidates])[0]
            best = int(np.argmax(iou))
            label = labels[candidates[best]]
            said = named(labels[c], patterns)
            if iou[best] >= config.iou and said and label not in said:
                drop[c] = True
                details[c] = f"names {', '.join(sorted(said))} on a {label} box of {specialists[candidates[best]]}"
                continue
        if (candidates := readers_of.get(images[c])) and (words := quoted(labels[c])):
            inside = [k for k, hit in zip(candidates, _centres_inside(boxes[[c]], boxes[candidates])[0]) if hit]
            read = {w.upper() for k in inside for w in WORD.findall(labels[k])}
            if inside and not words & read:
                drop[c] = True
                details[c] = (f"quotes {' '.join(sorted(words))} where {specialists[inside[0]]} reads "
                              f"{' / '.join(labels[k] for k in inside)[:80]}")
    return Decision.from_mask("caption_check", drop, lambda i: f"caption_conflict: {details[i]}")


def _by_image(indices: list[int], images: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i in indices:
        out.setdefault(images[i], []).append(i)
    return out
