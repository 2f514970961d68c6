"""Region captions checked against what other specialists say of their box: a cross-specialist filter.

**Objects.** A captioner that names another object than the detector gave the same box is
usually the one that is wrong: on the embedded world's gold (round 1, 151 images;
``bench/caption_agreement.py``) the zoo YOLO's label was right and Florence-2's caption wrong for
323 such boxes, the other way round for 32, and relabelling boxes by their captions lowered
detection F1 at every threshold. So a caption whose subject (its first noun phrase, spaCy) is a
category of the detectors' vocabulary other than its box's label is dropped. Only the subject
counts: "a man riding a bicycle" on a person box names no category (man is none) and stays, and
"a small cross near a tree" is about a cross.

**Text.** A caption that quotes text (a word in capitals of two letters or more, or words in
quotation marks) on a box inside which an OCR reader found text, none of whose words it quotes,
is dropped too: in ``make run``'s third round 82 of 96 sign captions said "FARM" (the world's
signs say one of 20 words, drawn evenly), and RapidOCR read another word inside 79 of them.

A caption that names no category and quotes nothing, or has no judged box, stays. Every drop
is kept whole in ``rejected`` (``caption_conflict``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filters.decision import Decision
from filters.phrases import PhraseParser
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


def subject_names(phrase: str, root: str, category: str) -> bool:
    """Whether a noun phrase (its text and head lemma) is a ``category``: its head is the category,
    or it ends with it (multi-word categories: "a red traffic light"), singular or plural."""
    if root == category:
        return True
    text = phrase.lower()
    return any(text.endswith(form) and (len(text) == len(form) or not text[-len(form) - 1].isalnum())
               for form in (category, category + "s", category + "es"))


def subjects(texts: list[str], parser: PhraseParser) -> list[tuple[str, str] | None]:
    """Each text's subject: its first noun phrase's (text, head lemma), or None."""
    return [(p.phrases[0].text, p.phrases[0].root) if p.phrases else None for p in parser.parse(texts)]


def quoted(text: str) -> set[str]:
    """The words ``text`` quotes (in quotation marks, or in capitals where the rest is not), upper-cased."""
    shouting = not any(ch.islower() for ch in text)  # a text all in capitals quotes only what it puts in quotation marks
    return {w.upper() for m in QUOTED.finditer(text) for k, part in enumerate(m.groups())
            if part and not (shouting and k == 2) for w in WORD.findall(part)}


def words_of(texts) -> set[str]:
    """The words of ``texts`` (OCR readings, say), upper-cased: what a quote is compared with."""
    return {w.upper() for text in texts for w in WORD.findall(text or "")}


def _centres_inside(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(len(outer), len(inner)): whether each inner box's centre lies in each outer box."""
    cx, cy = (inner[:, 0] + inner[:, 2]) / 2, (inner[:, 1] + inner[:, 3]) / 2
    return ((outer[:, None, 0] <= cx) & (cx <= outer[:, None, 2]) & (outer[:, None, 1] <= cy) & (cy <= outer[:, None, 3]))


def caption_conflicts(rows: pa.Table, config: CaptionCheckConfig, parser: PhraseParser) -> Decision:
    """Drop region captions whose subject is another category than the judge's label of their
    box, or that quote text the OCR read inside their box does not hold."""
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
    vocabulary = sorted(set(config.vocabulary) | {labels[i] for i in judges})
    judges_of, readers_of = _by_image(judges, images), _by_image(readers, images)
    judged = [c for c in captions if images[c] in judges_of]
    subject = dict(zip(judged, subjects([labels[c] for c in judged], parser))) if judged else {}
    boxes = boxes_of(rows)
    for image, here in _by_image(captions, images).items():  # one IoU matrix and one containment matrix per image
        judging, reading = judges_of.get(image, []), readers_of.get(image, [])
        iou = box_iou(boxes[here], boxes[judging]) if judging else None
        inside = _centres_inside(boxes[here], boxes[reading]) if reading else None
        for j, c in enumerate(here):
            if iou is not None and (found := subject.get(c)):
                best = int(np.argmax(iou[j]))
                label = labels[judging[best]]
                said = [v for v in vocabulary if subject_names(*found, v)]
                if iou[j, best] >= config.iou and said and label not in said:
                    drop[c] = True
                    details[c] = f"{found[0]!r} on a {label} box of {specialists[judging[best]]}"
                    continue
            if inside is not None and (words := quoted(labels[c])):
                within = [k for k, hit in zip(reading, inside[j]) if hit]
                if within and not words & words_of(labels[k] for k in within):
                    drop[c] = True
                    details[c] = (f"quotes {' '.join(sorted(words))} where {specialists[within[0]]} reads "
                                  f"{' / '.join(labels[k] for k in within)[:80]}")
    return Decision.from_mask("caption_check", drop, lambda i: f"caption_conflict: {details[i]}")


def _by_image(indices: list[int], images: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i in indices:
        out.setdefault(images[i], []).append(i)
    return out
