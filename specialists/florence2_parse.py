"""Parsing Florence-2's generated text: labels, boxes and quads from location tokens, with a
score for each from the generation itself.

Coordinates are 1000 bins per axis; a bin decodes to its centre, ``(bin + 0.5) * size / 1000``,
clamped inside the image (transformers' post-processor decodes to the same centre but then
truncates to whole pixels). Scores: a box's is the mean probability of its location tokens; a
phrase's the mean probability of its text tokens; a text's the mean over all its tokens.
Without token probabilities (a plain string), scores are None, never a made-up constant.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

BINS = 1000
SPECIAL_DROPPED = {"<s>", "</s>", "<pad>"}
LOC = re.compile(r"<loc_(\d+)>")
BOX_RUN = re.compile(r"((?:<loc_\d+>){4,})")
LABELLED = re.compile(r"([^<]+)((?:<loc_\d+>){4,})")
OCR_ITEM = re.compile(r"(.+?)((?:<loc_\d+>){8})")
WRAPPERS = re.compile(r"</?(?:od|ground|obj|box|bbox)>")
MALFORMED = re.compile(r"loc_\d|[<>]|^(.{2,}?)\1{2,}$")
"""A label that is no label: a broken location token spelt out ("loc_662>star"), or one word
generated over and over ("starstarstar..."): a small model's degenerate output, seen in a round."""
TOKEN_SPLIT = re.compile(r"(<s>|</s>|<pad>|<loc_\d+>)")

TASK_TYPES = {
    "<CAPTION>": "text", "<DETAILED_CAPTION>": "text", "<MORE_DETAILED_CAPTION>": "text", "<OCR>": "text",
    "<REGION_TO_DESCRIPTION>": "text", "<REGION_TO_CATEGORY>": "text", "<REGION_TO_OCR>": "text",
    "<OD>": "boxes", "<DENSE_REGION_CAPTION>": "boxes", "<CAPTION_TO_PHRASE_GROUNDING>": "boxes",
    "<OPEN_VOCABULARY_DETECTION>": "boxes", "<REGION_PROPOSAL>": "proposals", "<OCR_WITH_REGION>": "ocr",
}  # fmt: skip


@dataclass(frozen=True)
class Generated:
    """A generation as token pieces (special tokens as themselves) with each token's probability."""

    pieces: tuple[str, ...]
    probs: tuple[float, ...] | None = None

    @classmethod
    def of(cls, text: str) -> Generated:
        """A plain string (no probabilities), split so that special and location tokens stand alone."""
        return cls(tuple(p for p in TOKEN_SPLIT.split(text) if p), None)


@dataclass(frozen=True)
class Item:
    text: str
    box: tuple[float, float, float, float] | None = None
    quad: tuple[float, ...] | None = None
    score: float | None = None
    """Boxes: mean probability of the location tokens; texts: of all tokens."""
    phrase_score: float | None = None
    """Mean probability of the label's or phrase's text tokens."""
    span: tuple[int, int] | None = None
    """Where the label stands in the generated text (after special tokens are dropped)."""


def decode_bin(index: int, size: float) -> float:
    return min(max((index + 0.5) * size / BINS, 0.0), float(size))


def quantize(value: float, size: float) -> int:
    """The bin of a coordinate: floor(value * 1000 / size), clamped to 0..999 (never <loc_1000>)."""
    return int(min(max(math.floor(value * BINS / size), 0), BINS - 1))


def location_tokens(box, size: tuple[int, int]) -> str:
    """``<loc_x1><loc_y1><loc_x2><loc_y2>`` (or 8 for a quad) for pixel coordinates."""
    w, h = size
    return "".join(f"<loc_{quantize(v, w if i % 2 == 0 else h)}>" for i, v in enumerate(box))


class _Text:
    """The generated text with special tokens dropped, and each character's token probability."""

    def __init__(self, generated: Generated):
        kept = [(p, None if generated.probs is None else generated.probs[i])
                for i, p in enumerate(generated.pieces) if p not in SPECIAL_DROPPED]
        self.text = "".join(p for p, _ in kept)
        self.has_probs = generated.probs is not None
        self.token_of_char = np.full(len(self.text), -1)
        self.token_prob: list[float] = []
        self.loc_prob: dict[int, float] = {}
        at = 0
        for piece, prob in kept:
            if prob is not None:
                if LOC.fullmatch(piece):
                    self.loc_prob[at] = prob
                else:
                    self.token_of_char[at : at + len(piece)] = len(self.token_prob)
                    self.token_prob.append(prob)
            at += len(piece)

    def mean_over(self, start: int, end: int) -> float | None:
        """Mean probability of the text tokens overlapping text[start:end] (each token once)."""
        if not self.has_probs:
            return None
        tokens = np.unique(self.token_of_char[start:end])
        tokens = tokens[tokens >= 0]
        return float(np.mean([self.token_prob[k] for k in tokens])) if len(tokens) else None

    def locs(self, start: int, end: int) -> tuple[list[int], float | None]:
        """The bins in text[start:end] and the mean probability of their tokens."""
        bins, probs = [], []
        for m in LOC.finditer(self.text, start, end):
            bins.append(int(m.group(1)))
            probs.append(self.loc_prob.get(m.start(), np.nan))
        score = float(np.nanmean(probs)) if self.has_probs and probs and not np.isnan(probs).all() else None
        return bins, score


def _box(bins: list[int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    w, h = size
    return (decode_bin(bins[0], w), decode_bin(bins[1], h), decode_bin(bins[2], w), decode_bin(bins[3], h))


def parse_florence2(generated: Generated | str, task: str, image_size: tuple[int, int]) -> list[Item]:
    """Items of one generation for ``task`` (``image_size`` is width, height)."""
    if task not in TASK_TYPES:
        raise ValueError(f"unknown Florence-2 task {task!r}; known: {', '.join(TASK_TYPES)}")
    if isinstance(generated, str):
        generated = Generated.of(generated)
    t = _Text(generated)
    kind = TASK_TYPES[task]
    if kind == "text":  # a location token ends it: what follows answers another task
        end = first.start() if (first := LOC.search(t.text)) else len(t.text)
        text = t.text[:end].strip()
        return [Item(text, score=t.mean_over(0, end))] if text else []
    items: list[Item] = []
    if kind == "proposals":
        for m in BOX_RUN.finditer(t.text):
            items += _boxes_of(t, m.start(), m.end(), "", None, None, image_size)
        return items
    if kind == "ocr":
        for m in OCR_ITEM.finditer(t.text):
            label = m.group(1).strip()
            bins, score = t.locs(m.start(2), m.end(2))
            w, h = image_size
            quad = tuple(decode_bin(b, w if i % 2 == 0 else h) for i, b in enumerate(bins))
            xs, ys = quad[0::2], quad[1::2]
            if label:
                items.append(Item(label, (min(xs), min(ys), max(xs), max(ys)), quad, score,
                                  t.mean_over(m.start(1), m.end(1)), (m.start(1), m.end(1))))
        return items
    for m in LABELLED.finditer(t.text):
        raw = m.group(1)
        label = WRAPPERS.sub("", raw).strip()
        if not label or MALFORMED.search(label):
            continue
        lead = len(raw) - len(raw.lstrip())
        span = (m.start(1) + lead, m.start(1) + lead + len(raw.strip()))
        items += _boxes_of(t, m.start(2), m.end(2), label, t.mean_over(*span), span, image_size)
    return items


def _boxes_of(t: _Text, start: int, end: int, label: str, phrase_score, span, size) -> list[Item]:
    """Every run of four location tokens in text[start:end] as one box."""
    matches = list(LOC.finditer(t.text, start, end))
    out = []
    for k in range(0, len(matches) - len(matches) % 4, 4):
        bins, score = t.locs(matches[k].start(), matches[k + 3].end())
        out.append(Item(label, _box(bins, size), None, score, phrase_score, span))
    return out
