"""From trainers' ``Serving`` entries to a round: the specialists' specs and the filter config
(each specialist's calibrated confidence floor; a detector's labels judging the region captions). The gold measurement of a trained model and the
round that runs it both build theirs here, so they run the same specialists with the same filters."""

from __future__ import annotations

from collections.abc import Sequence

from engine.round.config import RoundConfig, SpecialistSpec
from filters.captions import CaptionCheckConfig
from filters.fusion import FusionConfig
from filters.pipeline import FilterConfig
from filters.regions import RegionFilterConfig
from specialists.training.trainer import Serving

SHARD_SIZE = 16
"""Images per shard of the loop's rounds, and per batch of their gold measurement."""
FUSION_PRIORITY = ("yolo", "rapidocr", "florence2")
"""Whose box and label lead a fused region when specialists agree (objects: YOLO's; text: RapidOCR's)."""
FUSED_KINDS = ("object", "ocr")


def specs(servings: Sequence[Serving]) -> list[SpecialistSpec]:
    """One spec per serving; a key taken already gets a numbered one (two Florence-2 checkpoints)."""
    out: list[SpecialistSpec] = []
    for s in servings:
        key = s.key or s.specialist
        taken = {spec.key for spec in out}
        k = 1
        while key in taken:
            key, k = f"{s.key or s.specialist}-{k}", k + 1
        out.append(SpecialistSpec(s.specialist, dict(s.options), key=key))
    return out


def round_filters(servings: Sequence[Serving]) -> FilterConfig:
    """The loop's filters, with each serving's own confidence floor."""
    # keyed by the name the specialist writes in its rows (a plugin's registry name is its import path)
    built = [(s, spec.build().name) for s, spec in zip(servings, specs(servings))]
    floors = {name if s.scored_kind is None else f"{name}/{s.scored_kind}": s.min_score
              for s, name in built if s.min_score is not None}
    # a detector's labels judge the region captions made on its boxes, an OCR reader the text they quote
    judges = {name: s.labels for s, name in built if s.labels}
    return FilterConfig(regions=RegionFilterConfig(min_score_by_specialist=floors),
                        fusion=FusionConfig(kinds=FUSED_KINDS, priority=FUSION_PRIORITY),
                        captions=CaptionCheckConfig(judges=tuple(sorted(judges)),
                                                    vocabulary=tuple(sorted({w for ws in judges.values() for w in ws})),
                                                    readers=tuple(sorted({name for s, name in built if s.reads_text}))))


def round_config(servings: Sequence[Serving], splits: tuple[str, ...] = ("pool", "gold")) -> RoundConfig:
    return RoundConfig(specialists=tuple(specs(servings)), filters=round_filters(servings), shard_size=SHARD_SIZE,
                       splits=splits)
