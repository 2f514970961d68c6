"""A round: the images of the configured splits, sharded, annotated by the specialists through
the Ray pipeline, filtered, and written shard by shard with a completion marker, so a rerun of
an interrupted round skips finished shards and ends with the same rows."""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from engine.dataset.store import RoundWriter, Store, StoreError
from engine.round.annotate import Annotated, failures_table
from engine.round.config import RoundConfig
from engine.round.runtime import Pipeline, Runtime
from engine.round.shards import Shard, plan_shards
from schemas import schema_for

log = logging.getLogger(__name__)
WRITTEN = ("texts", "regions", "triplets", "rejected", "failures")
PROGRESS: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar("fld_round_progress", default=None)
"""A progress listener for rounds started deeper down (e.g. inside a Prefect flow) than its caller."""


@dataclass
class RoundSummary:
    round: int
    shards: int = 0
    skipped: int = 0
    images: int = 0
    seconds: float = 0.0
    kept: Counter = field(default_factory=Counter)
    raw: Counter = field(default_factory=Counter)
    failures: int = 0
    filter_counts: dict[str, Counter] = field(default_factory=dict)
    model_seconds: Counter = field(default_factory=Counter)

    def add(self, result: Annotated) -> None:
        """Count one written shard."""
        self.images += result.images
        self.failures += len(result.failures)
        self.kept.update({t: rows.num_rows for t, rows in result.kept.items()})
        self.raw.update(result.raw)
        self.model_seconds.update(result.seconds)
        for name, counts in result.counts.items():
            self.filter_counts.setdefault(name, Counter()).update(counts)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """Plain JSON-able data (``asdict`` would rebuild each Counter from its items, as counts of pairs)."""
        return {"round": self.round, "shards": self.shards, "skipped": self.skipped, "images": self.images,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 3),
                "kept": dict(self.kept), "raw": dict(self.raw), "failures": self.failures,
                "filter_counts": {k: dict(v) for k, v in self.filter_counts.items()},
                "model_seconds": dict(self.model_seconds)}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def record_round(writer: RoundWriter, kind: str, config_json: str, status: str, started: dt.datetime) -> None:
    row = {"round": writer.round, "kind": kind, "config": config_json, "status": status, "started_at": started,
           "finished_at": None if status == "running" else _now()}
    writer.write("rounds", "round", pa.Table.from_pylist([row], schema=schema_for("rounds")))


def write_shard(writer: RoundWriter, shard: Shard, result: Annotated) -> None:
    """Every table of a shard, then its marker: a shard is complete only once all are written."""
    tables = {**result.kept, "rejected": result.rejected, "failures": failures_table(result.failures)}
    for table in WRITTEN:
        writer.write(table, shard.index, tables[table])
    writer.mark_done(shard.index, {"images": result.images, "seconds": result.seconds, "counts": result.counts,
                                   "raw": result.raw, "kept": {t: n.num_rows for t, n in result.kept.items()},
                                   "failures": len(result.failures)})


def run_round(store: Store, round_id: int, config: RoundConfig,
              progress: Callable[[int, int], None] | None = None, kind: str = "specialists") -> RoundSummary:
    """Run (or resume) round ``round_id``; ``progress(images_done, images_total)`` as shards finish.
    ``kind`` is recorded in the rounds table (``specialists`` or ``refinement``)."""
    progress = progress or PROGRESS.get()
    if round_id < 1:
        raise StoreError("round 0 holds ingested images and ground truth; annotation rounds start at 1")
    shards = plan_shards(store, config.splits, config.shard_size)
    if not shards:
        raise StoreError(f"no readable images of splits {', '.join(config.splits)} in {store.root}: run `fld ingest` first")
    summary = RoundSummary(round_id, shards=len(shards))
    total = sum(len(s.image_ids) for s in shards)
    with store.writer(round_id) as writer:  # a second fld on this round stops here
        done = writer.done_shards()
        todo = [s for s in shards if s.label not in done]
        summary.skipped = len(shards) - len(todo)
        finished = sum(len(s.image_ids) for s in shards if s.label in done)
        if progress:
            progress(finished, total)
        if not todo:
            log.info("round %d: every shard is already complete", round_id)
            return summary
        started = _now()
        with Runtime(config.ray_address):  # ClusterError before anything is written
            pipeline = Pipeline(config, round_id)
            record_round(writer, kind, config.to_json(), "running", started)
            start = time.perf_counter()
            try:
                for shard, result in pipeline.run(todo):
                    write_shard(writer, shard, result)
                    summary.add(result)
                    finished += len(shard.image_ids)
                    if progress:
                        progress(finished, total)
            except BaseException:
                record_round(writer, kind, config.to_json(), "failed", started)
                raise
            summary.seconds = time.perf_counter() - start
            record_round(writer, kind, config.to_json(), "completed", started)
    return summary
