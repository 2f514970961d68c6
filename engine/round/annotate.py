"""The one annotation path: a batch of images through the specialists in stage order, then the
filters. Plain Python (no Ray, no Prefect): a round's Ray actors run its two halves
(``run_specialist`` in each specialist's actor, ``finish`` in the filter actor) and the gold
measurement behind the gates runs it whole (``annotate``), so a gate sees exactly what a round
with that model would keep.

A specialist that raises on a batch is retried image by image; an image that still fails gets a
``Failure`` and the others go on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig, filter_annotations
from schemas import schema_for
from specialists.base import MASKS, Batch, Specialist

log = logging.getLogger(__name__)
ANNOTATIONS = ("texts", "regions", "triplets")
PROMPTS = ("texts", "regions")


@dataclass(frozen=True)
class Failure:
    """One image that a stage could not handle (a ``failures`` row)."""

    round: int
    shard: str
    image_id: str
    stage: str
    error: str

    @classmethod
    def of(cls, round_id: int, shard: str, image_id: str, stage: str, error: BaseException | str) -> Failure:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(round_id, shard, image_id, stage, text[:2000])

    def row(self) -> dict:
        return asdict(self)


def failures_table(failures: Sequence[Failure]) -> pa.Table:
    return pa.Table.from_pylist([f.row() for f in failures], schema=schema_for("failures"))


@dataclass
class Decoded:
    """A batch's images, decoded once for every specialist, and the images that did not decode."""

    image_ids: list[str]
    pixels: list[np.ndarray]
    failures: list[Failure] = field(default_factory=list)

    @property
    def sizes(self) -> dict[str, tuple[int, int]]:
        return {i: (int(p.shape[1]), int(p.shape[0])) for i, p in zip(self.image_ids, self.pixels)}


def decode(image_ids: Sequence[str], uris: Sequence[str], load: Callable[[str], np.ndarray], round_id: int = 0,
           shard: str = "") -> Decoded:
    """Pixels of the images (``load`` reads one uri), and a ``decode`` failure for each that no longer reads."""
    out = Decoded([], [])
    for image_id, uri in zip(image_ids, uris):
        try:
            out.pixels.append(load(uri))
            out.image_ids.append(image_id)
        except Exception as err:  # the file may have changed since ingestion: any error is the image's
            out.failures.append(Failure.of(round_id, shard, image_id, "decode", err))
    return out


@dataclass
class StageOutput:
    """What one specialist made for a batch: annotation tables (``masks`` for a segmenter)."""

    key: str
    tables: dict[str, pa.Table]
    failures: list[Failure]
    seconds: float
    floored: dict[str, int] = field(default_factory=dict)
    """What the model's own floors removed, by reason (``Specialist.floors``)."""
    floors: dict[str, float] = field(default_factory=dict)


@dataclass
class Annotated:
    """A batch after every specialist and the filters: what a round writes for a shard."""

    kept: dict[str, pa.Table]
    rejected: pa.Table
    failures: list[Failure]
    seconds: dict[str, float]
    """Per specialist key, and ``filters``."""
    counts: dict[str, dict[str, int]]
    """Per filter: ``kept`` and one count per reason code."""
    raw: dict[str, int]
    """Rows per table before the filters."""
    images: int
    floored: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per specialist key: what its model's own floors removed, by reason (before ``raw``)."""
    floors: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per specialist key: the values of those floors."""

    @staticmethod
    def failed(failures: Sequence[Failure]) -> Annotated:
        """A batch none of whose images could be annotated: its failures and nothing else."""
        empty = {t: schema_for(t).empty_table() for t in ANNOTATIONS}
        return Annotated(empty, schema_for("rejected").empty_table(), list(failures), {}, {},
                         {t: 0 for t in ANNOTATIONS}, 0)

    @staticmethod
    def concat(parts: Sequence[Annotated]) -> Annotated:
        """One result for several batches (counts and seconds added up)."""
        counts: dict[str, Counter] = defaultdict(Counter)
        floored: dict[str, Counter] = defaultdict(Counter)
        seconds: Counter = Counter()
        for p in parts:
            for name, c in p.counts.items():
                counts[name].update(c)
            for key, c in p.floored.items():
                floored[key].update(c)
            seconds.update(p.seconds)
        return Annotated({t: _concat(t, [p.kept[t] for p in parts]) for t in ANNOTATIONS},
                         _concat("rejected", [p.rejected for p in parts]), [f for p in parts for f in p.failures],
                         dict(seconds), {name: dict(c) for name, c in counts.items()},
                         {t: sum(p.raw.get(t, 0) for p in parts) for t in ANNOTATIONS}, sum(p.images for p in parts),
                         {key: dict(c) for key, c in floored.items()}, {k: v for p in parts for k, v in p.floors.items()})


def _concat(name: str, tables: Sequence[pa.Table | None]) -> pa.Table:
    schema = schema_for("regions" if name == MASKS else name)
    tables = [t.cast(schema) for t in tables if t is not None and t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def prompts_of(earlier: Sequence[StageOutput]) -> dict[str, pa.Table]:
    """The texts and regions of earlier stages, as prompts for the next."""
    return {t: _concat(t, [e.tables.get(t) for e in earlier]) for t in PROMPTS}


def run_specialist(specialist: Specialist, key: str, decoded: Decoded, earlier: Sequence[StageOutput],
                   round_id: int = 0, shard: str = "") -> StageOutput:
    """One specialist over a decoded batch in its own batch size, prompted by ``earlier`` stages."""
    start = time.perf_counter()
    prompts = prompts_of(earlier)
    out: dict[str, list[pa.Table]] = {t: [] for t in specialist.produces}
    failures: list[Failure] = []
    ids, pixels, size = decoded.image_ids, decoded.pixels, specialist.batch_size
    for s in range(0, len(ids), size):
        chunk = (ids[s : s + size], pixels[s : s + size])
        try:
            results = [specialist(Batch(*chunk, prompts["regions"], prompts["texts"], round_id))]
        except Exception as err:
            log.warning("%s failed on a batch of %d images (%s); retrying one by one", key, len(chunk[0]), err)
            results = []
            for image_id, image in zip(*chunk):
                try:
                    results.append(specialist(Batch([image_id], [image], prompts["regions"], prompts["texts"], round_id)))
                except Exception as single:
                    failures.append(Failure.of(round_id, shard, image_id, key, single))
        for result in results:
            for table, rows in result.items():
                out.setdefault(table, []).append(rows)
    return StageOutput(key, {t: _concat(t, rows) for t, rows in out.items()}, failures, time.perf_counter() - start,
                       specialist.take_floored(), specialist.floors)


def apply_masks(regions: pa.Table, masks: pa.Table) -> pa.Table:
    """Regions with the masks a segmenter made for them (matched by region id)."""
    if masks.num_rows == 0 or regions.num_rows == 0:
        return regions
    found = {r["region_id"]: r for r in masks.select(["region_id", "mask", "mask_score", "mask_specialist"]).to_pylist()}
    ids = regions.column("region_id").to_pylist()
    for name in ("mask", "mask_score", "mask_specialist"):
        current = regions.column(name).to_pylist()
        values = [found[i][name] if i in found and found[i]["mask"] is not None else current[k] for k, i in enumerate(ids)]
        regions = regions.set_column(regions.schema.get_field_index(name), name,
                                     pa.array(values, regions.schema.field(name).type))
    return regions


def finish(decoded: Decoded, outputs: Sequence[StageOutput], config: FilterConfig, parser: PhraseParser) -> Annotated:
    """Merge the specialists' outputs of a batch, attach segmenter masks, and filter."""
    start = time.perf_counter()
    tables = {t: _concat(t, [o.tables.get(t) for o in outputs]) for t in ANNOTATIONS}
    for output in outputs:
        if MASKS in output.tables:
            tables["regions"] = apply_masks(tables["regions"], output.tables[MASKS])
    pixels = dict(zip(decoded.image_ids, decoded.pixels))
    filtered = filter_annotations(tables, decoded.sizes, parser, config, pixels=pixels)
    seconds = {o.key: o.seconds for o in outputs}
    seconds["filters"] = time.perf_counter() - start
    return Annotated(dict(filtered.kept), filtered.rejected, decoded.failures + [f for o in outputs for f in o.failures],
                     seconds, {name: dict(c) for name, c in filtered.counts.items()},
                     {t: tables[t].num_rows for t in ANNOTATIONS}, len(decoded.image_ids),
                     {o.key: o.floored for o in outputs}, {o.key: o.floors for o in outputs})


def stage_order(needs: dict[str, tuple[str, ...]], produces: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Specialists grouped in dependency order: a specialist runs once every other specialist that
    makes a table it needs has run (its own output does not count: it prompts with earlier ones).
    Two that each need and make the same table (two Florence-2 checkpoints describing and reading
    the round's regions, each admitted for a different task) prompt with what came before them
    both, so they do not wait on each other. A specialist that needs a table nobody makes, or
    specialists that need each other's output otherwise, are refused."""
    for name, tables in needs.items():
        missing = [t for t in tables if not any(t in produces[m] for m in produces if m != name)]
        if missing:
            makers = ", ".join(f"{m} makes {'/'.join(produces[m]) or 'nothing'}" for m in sorted(produces))
            raise ValueError(f"specialist {name!r} needs {', '.join(missing)} but no other specialist of the round "
                             f"makes it ({makers})")

    def waits(n: str, m: str) -> bool:  # n needs a table m makes, and they are not two refiners of it
        return any(t in produces[m] and not (t in produces[n] and t in needs[m]) for t in needs[n])

    remaining, stages = dict(needs), []
    while remaining:
        ready = sorted(n for n in remaining if not any(waits(n, m) for m in remaining if m != n))
        if not ready:
            raise ValueError(f"specialists {', '.join(sorted(remaining))} need each other's output "
                             f"({'; '.join(f'{n} needs {chr(47).join(remaining[n])}' for n in sorted(remaining))})")
        stages.append(ready)
        for n in ready:
            remaining.pop(n)
    return stages


def annotate(decoded: Decoded, stages: Sequence[Sequence[tuple[str, Specialist]]], config: FilterConfig,
             parser: PhraseParser, round_id: int = 0, shard: str = "") -> Annotated:
    """A decoded batch through loaded specialists (``(key, specialist)`` per stage) and the filters."""
    outputs: list[StageOutput] = []
    for stage in stages:
        earlier = list(outputs)
        outputs += [run_specialist(s, key, decoded, earlier, round_id, shard) for key, s in stage]
    return finish(decoded, outputs, config, parser)
