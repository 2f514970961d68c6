"""Triplet filters: the released Florence-2 phrase blacklist and abstract nouns, phrase and box
confidence thresholds, and phrases contained in a longer kept phrase for the same region."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.decision import Decision
from filters.regions import scores_of

FLORENCE2_BLACKLIST = frozenset({
    "it", "i", "you", "he", "they", "this", "that", "these", "who", "which", "what", "all", "any",
    "each", "some", "someone", "the image", "image", "images", "the", "a", "an", "a group",
    "other objects", "lots", "a set",
})  # fmt: skip
"""Phrases the released Florence-2 post-processor never grounds (banned_grounding_tokens)."""

ABSTRACT_NOUNS = frozenset({
    "image", "picture", "photo", "scene", "view", "background", "foreground", "thing", "things",
    "something", "object", "objects", "kind", "type", "way", "part", "side", "area", "top",
    "bottom", "left", "right", "centre", "center", "middle", "idea", "lot", "group", "set",
})  # fmt: skip
"""Head nouns that name no region (Kosmos-2's GRIT drops abstract nouns too)."""
ARTICLES = re.compile(r"^(the|a|an)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class TripletFilterConfig:
    min_phrase_score: float = 0.2
    min_box_score: float = 0.25
    blacklist: frozenset[str] = FLORENCE2_BLACKLIST
    abstract_nouns: frozenset[str] = field(default=ABSTRACT_NOUNS)

    def __post_init__(self) -> None:
        for name in ("min_phrase_score", "min_box_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")


def _head(phrase: str) -> str:
    words = re.findall(r"[a-z]+", phrase.lower())
    return words[-1] if words else ""


def phrase_quality(rows: pa.Table, config: TripletFilterConfig) -> Decision:
    """Blacklisted phrases (whole phrase, with or without its article) and abstract head nouns."""
    reasons: list[str | None] = []
    for phrase in rows.column("phrase").to_pylist():
        text = " ".join(phrase.lower().split())
        bare = ARTICLES.sub("", text)
        if text in config.blacklist or bare in config.blacklist:
            reasons.append(f"blacklisted: {text!r}")
        elif _head(text) in config.abstract_nouns:
            reasons.append(f"abstract: head noun {_head(text)!r}")
        else:
            reasons.append(None)
    return Decision("phrase", reasons)


def triplet_confidence(rows: pa.Table, config: TripletFilterConfig) -> Decision:
    box = scores_of(rows)
    phrase = pc.fill_null(rows.column("phrase_score").cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        return Decision.first_failure("triplet_confidence", rows.num_rows, [
            (phrase < config.min_phrase_score, lambda i: f"low_phrase_confidence: {phrase[i]:.3f} < {config.min_phrase_score}"),
            (box < config.min_box_score, lambda i: f"low_box_confidence: {box[i]:.3f} < {config.min_box_score}"),
        ])


def contained(rows: pa.Table) -> Decision:
    """A phrase whose span lies inside a longer phrase of the same text pointing at the same box."""
    records = rows.select(["image_id", "text_id", "region_id", "box", "span_start", "span_end"]).to_pylist()
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        target = r["region_id"] if r["region_id"] is not None else tuple(r["box"])
        groups.setdefault((r["image_id"], r["text_id"], target), []).append(i)
    reasons: list[str | None] = [None] * len(records)
    for members in groups.values():
        for i in members:
            a, b = records[i]["span_start"], records[i]["span_end"]
            for j in members:
                c, d = records[j]["span_start"], records[j]["span_end"]
                if j != i and c <= a and b <= d and (d - c) > (b - a):
                    reasons[i] = f"contained: in the phrase at [{c}, {d})"
                    break
    return Decision("contained", reasons)
