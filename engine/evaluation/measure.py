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
from engine.round.config import SpecialistSpec
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig
from specialists.base import Batch, Specialist

GOLD_BOXES = "gold-boxes"


class GoldBoxes(Specialist):
    """The gold split's object boxes as prompts, to measure a segmenter alone (mask IoU given
    perfect boxes): a segmenter's round has boxes from a detector, which is measured on its own."""

    name, role, produces = GOLD_BOXES, "detector", ("regions",)

    def __init__(self, gold: Store):
        super().__init__(batch_size=1024)
        regions = gold.read("regions")
        self.regions = regions.filter(pc.equal(regions.column("kind"), "object"))

    def load(self) -> None:
        self._version = "gold"

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        rows = self.regions.filter(pc.is_in(self.regions.column("image_id"), pa.array(batch.image_ids, pa.string())))
        for name, values in (("mask", pa.nulls(rows.num_rows, rows.schema.field("mask").type)),
                             ("score", pa.array([1.0] * rows.num_rows, pa.float32()))):
            rows = rows.set_column(rows.schema.get_field_index(name), name, values)
        return {"regions": rows}


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
    """Gold metrics of what ``specialists`` make and the filters keep."""
    kept = annotate_gold(specialists, gold, filters, batch_size).kept
    return Evaluator(gold).evaluate(kept)


def measure_specs(specs: Sequence[SpecialistSpec], filters: FilterConfig, gold: Store,
                  prompts: Sequence[tuple[str, Specialist]] = (), batch_size: int = 32) -> list[Measurement]:
    """Gold metrics of configured specialists alone (``prompts``, e.g. gold boxes, run before them),
    with a round's filters and shard size: what a round of exactly these would score on gold."""
    specialists = [*prompts, *((s.key, s.build()) for s in specs)]
    for _, specialist in specialists:
        if not specialist.loaded:
            specialist.load()
    return measure(specialists, gold, filters, batch_size)
