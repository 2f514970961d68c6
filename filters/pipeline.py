"""The filter pipeline of a round: texts (surface, parse, one description repeated across the
shard's images), then regions (geometry, confidence, cap, NMS, blank crops, region captions
against their box's label, re-reads of regions dropped, fusion), then
triplets (their text kept?, geometry, phrase quality, confidence, containment). Every drop lands in ``rejected``; every filter reports what it kept and dropped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.captions import CaptionCheckConfig, caption_conflicts
from filters.decision import Decision, apply
from filters.fusion import FusionConfig, fuse, unconfirmed
from filters.phrases import PhraseParser
from filters.regions import RegionFilterConfig, blank, confidence, geometry, nms, per_image_cap
from filters.text import TextFilterConfig, ocr_text, repeated_texts, text_decision
from filters.triplets import TripletFilterConfig, contained, phrase_quality, triplet_confidence
from schemas import schema_for


@dataclass(frozen=True)
class FilterConfig:
    text: TextFilterConfig = field(default_factory=TextFilterConfig)
    regions: RegionFilterConfig = field(default_factory=RegionFilterConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    captions: CaptionCheckConfig = field(default_factory=CaptionCheckConfig)
    triplets: TripletFilterConfig = field(default_factory=TripletFilterConfig)


@dataclass
class Filtered:
    kept: dict[str, pa.Table]
    rejected: pa.Table
    counts: dict[str, Counter]
    """Per filter: ``kept`` and one count per reason code."""


class _Run:
    def __init__(self) -> None:
        self.rejected: list[pa.Table] = []
        self.counts: dict[str, Counter] = {}

    def step(self, table: str, rows: pa.Table, decide: Callable[[pa.Table], Decision]) -> pa.Table:
        decision = decide(rows)
        kept, rejected = apply(table, rows, decision)
        self.rejected.append(rejected)
        self.counts.setdefault(decision.filter, Counter()).update(decision.counts())
        return kept


def filter_annotations(
    annotations: Mapping[str, pa.Table],
    sizes: Mapping[str, tuple[int, int]],
    parser: PhraseParser,
    config: FilterConfig = FilterConfig(),
    pixels: Mapping[str, np.ndarray] | None = None,
) -> Filtered:
    """Filter one batch of specialist output (any images); ``pixels`` enables the blank-crop filter."""
    run = _Run()
    empty = {t: schema_for(t).empty_table() for t in ("texts", "regions", "triplets")}
    texts = annotations.get("texts", empty["texts"])
    texts = run.step("texts", texts, lambda r: text_decision(r, parser, config.text)[0])
    texts = run.step("texts", texts, lambda r: repeated_texts(r, config.text))

    regions = given = annotations.get("regions", empty["regions"])
    regions = run.step("regions", regions, lambda r: geometry(r, sizes, config.regions))
    regions = run.step("regions", regions, lambda r: ocr_text(r, config.text))
    regions = run.step("regions", regions, lambda r: confidence(r, config.regions))
    regions = run.step("regions", regions, lambda r: per_image_cap(r, config.regions))
    regions = run.step("regions", regions, lambda r: nms(r, config.regions))
    if pixels is not None:
        regions = run.step("regions", regions, lambda r: blank(r, pixels, config.regions))
    regions = run.step("regions", regions, lambda r: caption_conflicts(r, config.captions, parser))
    regions = run.step("regions", regions, lambda r: unconfirmed(r, given))
    fused, decision = fuse(regions, config.fusion)
    regions = run.step("regions", regions, lambda r: decision)
    regions = pa.concat_tables([regions, fused])
    run.counts["fusion"]["fused"] = fused.num_rows

    triplets = annotations.get("triplets", empty["triplets"])
    kept_texts = pa.array(texts.column("text_id").to_pylist(), pa.string())
    triplets = run.step("triplets", triplets, lambda r: Decision.from_mask(
        "source_text", ~pc.is_in(r.column("text_id"), kept_texts).to_numpy(zero_copy_only=False),
        "text_dropped: the text this phrase comes from was filtered out"))
    triplets = run.step("triplets", triplets, lambda r: geometry(r, sizes, config.regions))
    triplets = run.step("triplets", triplets, lambda r: phrase_quality(r, config.triplets))
    triplets = run.step("triplets", triplets, lambda r: triplet_confidence(r, config.triplets))
    triplets = run.step("triplets", triplets, contained)
    rejected = pa.concat_tables(run.rejected) if run.rejected else schema_for("rejected").empty_table()
    return Filtered({"texts": texts, "regions": regions, "triplets": triplets}, rejected, run.counts)
