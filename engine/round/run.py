"""A round: the images of the configured splits, sharded, annotated by the specialists through
the Ray pipeline, filtered, and written shard by shard with a completion marker that lists the
shard's images and the config that made them. A rerun of an interrupted round annotates exactly
the images no marker lists (whatever was ingested in between), removes the shards it began and
never finished, and refuses a changed config; it ends with the rows an uninterrupted round gives."""

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
from engine.round.shards import CONTENT_LABEL, Shard, plan_shards
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
    floored: dict[str, Counter] = field(default_factory=dict)
    """Per specialist key: what its model's own floors removed (never rows), by reason."""
    floors: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, result: Annotated) -> None:
        """Count one written shard."""
        self.images += result.images
        self.failures += len(result.failures)
        self.kept.update({t: rows.num_rows for t, rows in result.kept.items()})
        self.raw.update(result.raw)
        self.model_seconds.update(result.seconds)
        for name, counts in result.counts.items():
            self.filter_counts.setdefault(name, Counter()).update(counts)
        for key, counts in result.floored.items():
            self.floored.setdefault(key, Counter()).update(counts)
        self.floors.update(result.floors)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """Plain JSON-able data (``asdict`` would rebuild each Counter from its items, as counts of pairs)."""
        return {"round": self.round, "shards": self.shards, "skipped": self.skipped, "images": self.images,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 3),
                "kept": dict(self.kept), "raw": dict(self.raw), "failures": self.failures,
                "filter_counts": {k: dict(v) for k, v in self.filter_counts.items()},
                "model_seconds": dict(self.model_seconds),
                "floored": {k: dict(v) for k, v in self.floored.items()}, "floors": self.floors}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def record_round(writer: RoundWriter, kind: str, config_json: str, status: str, started: dt.datetime) -> None:
    row = {"round": writer.round, "kind": kind, "config": config_json, "status": status, "started_at": started,
           "finished_at": None if status == "running" else _now()}
    writer.write("rounds", "round", pa.Table.from_pylist([row], schema=schema_for("rounds")))


def write_shard(writer: RoundWriter, shard: Shard, result: Annotated, config_fingerprint: str) -> None:
    """Every table of a shard that has rows, then its marker: a shard is complete only once all
    are written. The marker lists the shard's images and the fingerprint of the config that made
    its rows. An empty table is no file (fewer files to fsync, list and open; see
    docs/PERFORMANCE.md): readers see no rows either way."""
    tables = {**result.kept, "rejected": result.rejected, "failures": failures_table(result.failures)}
    for table in WRITTEN:
        if tables[table].num_rows:
            writer.write(table, shard.label, tables[table])
    writer.mark_done(shard.label, {"image_ids": list(shard.image_ids), "config": config_fingerprint,
                                   "images": result.images, "seconds": result.seconds, "counts": result.counts,
                                   "raw": result.raw, "kept": {t: n.num_rows for t, n in result.kept.items()},
                                   "floored": result.floored, "floors": result.floors,
                                   "failures": len(result.failures)})


def finished_images(done: dict[str, dict], round_id: int, config_fingerprint: str) -> set[str]:
    """The images the round's completed shards hold, once every one of them was made by this config."""
    other = sorted(label for label, stats in done.items() if stats.get("config") != config_fingerprint)
    if other:
        raise StoreError(
            f"round {round_id} was started with another configuration ({len(other)} of its {len(done)} finished "
            f"shards, e.g. shard {other[0]}, were made by it): rerun it with the config it started with (the loop "
            "keeps it in <data>/configs/round-<r>.json), or run the new config as a new round")
    return {image for stats in done.values() for image in stats["image_ids"]}


def run_round(store: Store, round_id: int, config: RoundConfig,
              progress: Callable[[int, int], None] | None = None, kind: str = "specialists") -> RoundSummary:
    """Run (or resume) round ``round_id``; ``progress(images_done, images_total)`` as shards finish.
    ``kind`` is recorded in the rounds table (``specialists`` or ``refinement``)."""
    progress = progress or PROGRESS.get()
    if round_id < 1:
        raise StoreError("round 0 holds ingested images and ground truth; annotation rounds start at 1")
    fingerprint = config.rows_fingerprint()
    with store.writer(round_id) as writer:  # a second fld on this round stops here
        done = writer.done_shards()
        finished_ids = finished_images(done, round_id, fingerprint)
        writer.remove_unmarked(WRITTEN, CONTENT_LABEL)  # shards an interrupted run began and never finished
        todo = plan_shards(store, config.splits, config.shard_size, finished_ids)
        if not todo and not done:
            raise StoreError(f"no readable images of splits {', '.join(config.splits)} in {store.root}: "
                             "run `fld ingest` first")
        summary = RoundSummary(round_id, shards=len(done) + len(todo), skipped=len(done))
        finished = len(finished_ids)
        total = finished + todo.images
        if progress:
            progress(finished, total)
        if not todo:
            log.info("round %d: every image is already annotated", round_id)
            return summary
        started = _now()
        with Runtime(config.ray_address), Pipeline(config, round_id) as pipeline:  # ClusterError before any write
            record_round(writer, kind, config.to_json(), "running", started)
            start = time.perf_counter()
            try:
                for shard, result in pipeline.run(todo):
                    write_shard(writer, shard, result, fingerprint)
                    summary.add(result)
                    finished += len(shard.image_ids)
                    if progress:
                        progress(finished, total)
            except BaseException:
                try:
                    record_round(writer, kind, config.to_json(), "failed", started)
                except (OSError, StoreError) as err:  # a full disk: the round shows as interrupted instead
                    log.warning("round %d: could not record its failure: %s", round_id, err)
                raise
            summary.seconds = time.perf_counter() - start
            record_round(writer, kind, config.to_json(), "completed", started)
    return summary
