"""Gold quality of specialists, measured through the one annotation path (``engine.round.annotate``)
with the round's filters: a gate judges exactly what a round with those models would keep."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.sources import load_rgb
from engine.dataset.store import Store
from engine.evaluation.evaluate import Evaluator, Measurement
from engine.round.annotate import Annotated, annotate, decode, stage_order
from engine.round.config import RoundConfig, SpecialistSpec
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig
from specialists.base import Batch, Specialist

class Given(Specialist):
    """Fixed rows served as prompts, to measure a specialist given them rather than given another
    model's output: the gold split's object boxes (a segmenter's and a region captioner's mask IoU
    and captions given perfect boxes), the gold descriptions (a grounder's recall@1 given the
    gold captions, as Flickr30k Entities measures it), or a round's kept regions."""

    role = "prompts"

    def __init__(self, name: str, tables: dict[str, pa.Table]):
        super().__init__(batch_size=1024)
        self.name = name
        self.tables = tables
        self.produces = tuple(tables)

    def load(self) -> None:
        self._version = "given"

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        ids = pa.array(batch.image_ids, pa.string())
        return {t: rows.filter(pc.is_in(rows.column("image_id"), ids)) for t, rows in self.tables.items()}


def gold_boxes(gold: Store) -> Given:
    """The gold split's object boxes (no masks, score 1) and its text lines' boxes without their
    text (a reader given them must read it; the round's filters drop a line without text, so they
    are never scored themselves)."""
    regions = gold.read("regions")
    rows = regions.filter(pc.is_in(regions.column("kind"), pa.array(["object", "ocr"])))
    lines = pc.equal(rows.column("kind"), "ocr")
    for name, values in (("mask", pa.nulls(rows.num_rows, rows.schema.field("mask").type)),
                         ("score", pa.array([1.0] * rows.num_rows, pa.float32())),
                         ("label", pc.if_else(lines, pa.scalar(None, pa.string()), rows.column("label")))):
        rows = rows.set_column(rows.schema.get_field_index(name), name, values)
    return Given("gold-boxes", {"regions": rows})


def gold_texts(gold: Store) -> Given:
    """The gold split's descriptions, every granularity."""
    return Given("gold-texts", {"texts": gold.read("texts")})


@dataclass(frozen=True)
class EarlyStop:
    """Measure a model's tasks on a sample of the gold images first, and on the others only those
    that can still pass their gates. A task whose metric's 95% interval on the sample lies wholly
    below the least value its gate admits (``bars``: its floor, the trivial answer's value) is
    refused whatever the other images say, and is recorded as measured on the sample. Measuring on
    gold is a large part of a refinement round, and a weak model's tasks (Florence-2's grounding,
    OCR and region captions on the CPU) are refused by wide margins."""

    bars: Mapping[str, float]
    """Per metric (``family/metric``), the least value its gate admits."""
    first: int = 48
    """Gold images in the sample; a gold split no larger is measured whole."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.first < 1:
            raise ValueError(f"EarlyStop.first must be at least 1, got {self.first}")
        bad = {k: v for k, v in self.bars.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
        if bad:
            raise ValueError(f"EarlyStop bars must be finite numbers: {bad}")

    def sample(self, image_ids: Sequence[str]) -> list[str] | None:
        """The sample (the same for the same images), or None when all of them are to be measured."""
        ids = sorted(set(image_ids))
        return None if len(ids) <= self.first else sorted(random.Random(self.seed).sample(ids, self.first))

    def hopeless(self, found: Sequence[Measurement]) -> dict[str, str]:
        """Per metric whose 95% interval lies wholly below its bar: why (a metric without an
        interval, e.g. measured on too few images, is never hopeless)."""
        out = {}
        for m in found:
            bar, interval = self.bars.get(m.key), m.interval()
            if bar is not None and interval is not None and interval.high < bar:
                out[m.key] = (f"{m.key} {m.value:.3f} [{interval.low:.3f}, {interval.high:.3f}] on "
                              f"{m.units.measured} gold images, below its gate's {bar:.3f}")
        return out


def gold_images(gold: Store) -> dict[str, str]:
    """Image id -> uri of the gold images that were readable when they were listed (``status`` ok)."""
    images = gold.read("images")
    images = images.filter(pc.equal(images.column("status"), "ok"))
    return dict(zip(images.column("image_id").to_pylist(), images.column("uri").to_pylist()))


def annotate_gold(specialists: Sequence[tuple[str, Specialist]], gold: Store, filters: FilterConfig,
                  batch_size: int = 32, parser: PhraseParser | None = None,
                  images: Sequence[str] | None = None) -> Annotated:
    """Loaded specialists (``(key, specialist)``) over the gold images (or only ``images`` of
    them), filtered as in a round."""
    stages_by_key = stage_order({k: tuple(s.needs) for k, s in specialists}, {k: tuple(s.produces) for k, s in specialists})
    by_key = dict(specialists)
    stages = [[(k, by_key[k]) for k in stage] for stage in stages_by_key]
    parser = parser or PhraseParser()
    uris = gold_images(gold)
    ids = sorted(uris if images is None else set(uris) & set(images))
    parts = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        decoded = decode(chunk, [uris[i] for i in chunk], load_rgb)
        if decoded.failures:  # scored as an image with nothing found, it would lower the metric unseen
            first = decoded.failures[0]
            raise ValueError(f"{len(decoded.failures)} gold image(s) cannot be read, so nothing is measured on them: "
                             f"{first.image_id} ({uris[first.image_id]}): {first.error}")
        parts.append(annotate(decoded, stages, filters, parser))
    return Annotated.concat(parts)


def as_scored(specialists: Sequence[tuple[str, Specialist]], kept: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Kept rows as the evaluator takes them. When one of ``specialists`` serves the gold
    descriptions (``gold_texts``), the kept triplets are a grounding given them: they are scored
    as such (``grounding_recall@1``), not as a round's own triplets (``triplet_*``)."""
    if any(isinstance(s, Given) and "texts" in s.produces for _, s in specialists):
        return {"texts": kept["texts"], "regions": kept["regions"], "grounded": kept["triplets"]}
    return kept


def measure(specialists: Sequence[tuple[str, Specialist]], gold: Store, filters: FilterConfig,
            batch_size: int = 32) -> list[Measurement]:
    """Gold metrics of what ``specialists`` make and the filters keep."""
    kept = annotate_gold(specialists, gold, filters, batch_size).kept
    return Evaluator(gold).evaluate(as_scored(specialists, kept))


def measure_specs(specs: Sequence[SpecialistSpec], filters: FilterConfig, gold: Store,
                  prompts: Sequence[tuple[str, Specialist]] = (), batch_size: int = 32) -> list[Measurement]:
    """Gold metrics of configured specialists alone (``prompts``, e.g. gold boxes, run before them),
    with a round's filters and shard size: what a round of exactly these would score on gold."""
    return measure(loaded(specs, prompts), gold, filters, batch_size)


def loaded(specs: Sequence[SpecialistSpec], prompts: Sequence[tuple[str, Specialist]] = ()) -> list[tuple[str, Specialist]]:
    """``(key, specialist)`` of the prompts, then of the configured specialists, each loaded."""
    specialists = [*prompts, *((s.key, s.build()) for s in specs)]
    for _, specialist in specialists:
        if not specialist.loaded:
            specialist.load()
    return specialists


def ground_gold_texts(config: RoundConfig, kept_regions: pa.Table, gold: Store, batch_size: int = 32) -> pa.Table | None:
    """The triplets a round's grounders (its specialists that make triplets) keep given the gold
    descriptions and the round's own kept regions of the gold images; None when it has no grounder."""
    grounders = [s for s in config.specialists if "triplets" in s.build().produces]
    if not grounders:
        return None
    given = [(g.name, g) for g in (gold_texts(gold), Given("round-regions", {"regions": kept_regions}))]
    return annotate_gold(loaded(grounders, given), gold, config.filters, batch_size).kept["triplets"]
