"""Gold quality of specialists, measured through the one annotation path (``engine.round.annotate``)
with the round's filters: a gate judges exactly what a round with those models would keep."""

from __future__ import annotations

from collections.abc import Sequence

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
    """The gold split's object boxes (no masks, score 1)."""
    regions = gold.read("regions")
    rows = regions.filter(pc.equal(regions.column("kind"), "object"))
    for name, values in (("mask", pa.nulls(rows.num_rows, rows.schema.field("mask").type)),
                         ("score", pa.array([1.0] * rows.num_rows, pa.float32()))):
        rows = rows.set_column(rows.schema.get_field_index(name), name, values)
    return Given("gold-boxes", {"regions": rows})


def gold_texts(gold: Store) -> Given:
    """The gold split's descriptions, every granularity."""
    return Given("gold-texts", {"texts": gold.read("texts")})


def gold_images(gold: Store) -> dict[str, str]:
    images = gold.read("images")
    return dict(zip(images.column("image_id").to_pylist(), images.column("uri").to_pylist()))


def annotate_gold(specialists: Sequence[tuple[str, Specialist]], gold: Store, filters: FilterConfig,
                  batch_size: int = 32, parser: PhraseParser | None = None) -> Annotated:
    """Loaded specialists (``(key, specialist)``) over the gold images, filtered as in a round."""
    stages_by_key = stage_order({k: tuple(s.needs) for k, s in specialists}, {k: tuple(s.produces) for k, s in specialists})
    by_key = dict(specialists)
    stages = [[(k, by_key[k]) for k in stage] for stage in stages_by_key]
    parser = parser or PhraseParser()
    uris = gold_images(gold)
    ids = sorted(uris)
    parts = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        parts.append(annotate(decode(chunk, [uris[i] for i in chunk], load_rgb), stages, filters, parser))
    return Annotated.concat(parts)


def measure(specialists: Sequence[tuple[str, Specialist]], gold: Store, filters: FilterConfig,
            batch_size: int = 32) -> list[Measurement]:
    """Gold metrics of what ``specialists`` make and the filters keep. When one of them serves the
    gold descriptions (``gold_texts``), the kept triplets are a grounding given them: they are
    scored as such (``grounding_recall@1``), not as a round's own triplets (``triplet_*``)."""
    kept = annotate_gold(specialists, gold, filters, batch_size).kept
    if any(isinstance(s, Given) and "texts" in s.produces for _, s in specialists):
        kept = {"texts": kept["texts"], "regions": kept["regions"], "grounded": kept["triplets"]}
    return Evaluator(gold).evaluate(kept)


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
