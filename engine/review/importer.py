"""``fld review import``: a Label Studio export becomes a review round.

The export is read and checked whole first (``label_studio.read_export``: every problem named
by task and region), then against the dataset: made for this dataset and for the round whose
queue the person reviewed, images that may be reviewed (never gold). Reviews already imported
(same image, annotation and time) are skipped, so importing an export twice adds nothing.

The new reviews go to a **review round** on top of the latest round: a copy of its rows (round
``L + 1``, kind ``review``) in which the people's answers replace the machines' rows
(``engine.review.apply``); when the latest round is already a review round, they are added to
it. ``fld diff --from L --to L+1`` then shows what the people changed, and the next refinement
round trains on it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store, StoreError, write_atomic
from engine.loop.summary import write_summary
from engine.review.apply import Applied, apply_reviews, with_round
from engine.review.label_studio import ExportError, ReviewedTask, read_export
from engine.review.queue import REVIEWABLE_SPLITS, latest_annotation_round
from engine.round.run import record_round
from schemas import schema_for

COPIED = "review-copy"
"""Completion marker of a review round's copy of the round below it."""
COPY_TABLES = ("texts", "regions", "triplets")
COPY_METRICS = ("gates", "counts", "dropped", "changes")
"""Metric families of the round below that do not describe the review round (not copied)."""


def dataset_id(store: Store) -> str:
    """The dataset's identity (made once, kept in ``_meta/dataset.json``): a queue's tasks carry it,
    so that an export is never imported into another dataset."""
    path = store.root / "_meta" / "dataset.json"
    if not path.exists():
        body = json.dumps({"dataset_id": uuid.uuid4().hex}).encode()
        write_atomic(path, lambda tmp: tmp.write_bytes(body))
    return json.loads(path.read_text())["dataset_id"]


def known_labels(store: Store) -> set[str]:
    """Categories of every object row of the dataset (any round)."""
    regions = store.read("regions", columns=["kind", "label"])
    objects = regions.filter(pc.equal(regions.column("kind"), "object"))
    return {label for label in objects.column("label").to_pylist() if label}


@dataclass
class Imported:
    """What one import did."""

    round: int
    created: bool
    tasks: int
    new: int
    already: int
    superseded: int
    applied: Applied | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"round": self.round, "created": self.created, "tasks": self.tasks, "new": self.new,
                "already_imported": self.already, "superseded_annotations": self.superseded,
                "human_rows": dict(self.applied.human) if self.applied else {},
                "replaced_rows": dict(self.applied.replaced) if self.applied else {}, "seconds": round(self.seconds, 3)}


def _rounds(store: Store) -> dict[int, dict]:
    rows = store.read("rounds").to_pylist()
    return {r["round"]: r for r in sorted(rows, key=lambda r: (r["round"], r["status"] == "completed"))}


def _check(tasks: list[ReviewedTask], store: Store, path: Path, queue_round: int | None,
           rounds: dict[int, dict]) -> int:
    ours = dataset_id(store)
    others = sorted({t.dataset for t in tasks if t.dataset != ours})
    if others:
        raise ExportError(f"{path} was made for another dataset ({others[0]}; this one, {store.root}, is {ours}): "
                          "import it into the dataset its queue came from")
    queues = sorted({t.queue_round for t in tasks})
    if len(queues) > 1:
        raise ExportError(f"{path} mixes tasks of the queues of rounds {queues}: export one queue's project at a time")
    latest = latest_annotation_round(store)
    expected = queue_round if queue_round is not None else latest
    if queues[0] != expected:
        raise ExportError(f"{path} reviews the queue of round {queues[0]}, but "
                          + (f"--round says {queue_round}" if queue_round is not None else
                             f"the dataset's latest annotation round is {latest}")
                          + f": pass --round {queues[0]} to import it onto the latest round anyway")
    if queues[0] not in rounds:
        raise ExportError(f"{path} reviews round {queues[0]}, which {store.root} does not have (see `fld rounds`)")
    images = store.read("images", 0, columns=["image_id", "split"])
    split = dict(zip(images.column("image_id").to_pylist(), images.column("split").to_pylist()))
    wrong = [t for t in tasks if split.get(t.image_id) not in REVIEWABLE_SPLITS]
    if wrong:
        raise ExportError(f"{path}: task {wrong[0].task_id} (image {wrong[0].image_id}) is a {split.get(wrong[0].image_id)} "
                          f"image; only {', '.join(REVIEWABLE_SPLITS)} images may be reviewed into training "
                          f"({len(wrong)} such task(s))")
    return queues[0]


def import_export(store: Store, path: str | Path, queue_round: int | None = None,
                  allow_labels: Collection[str] = ()) -> Imported:
    """Import a Label Studio export into a review round (see the module); returns what it did."""
    start = time.perf_counter()
    path = Path(path)
    tasks = read_export(path, store.image_sizes(), known_labels(store) | set(allow_labels))
    if not tasks:
        raise ExportError(f"{path}: no task was submitted (every annotation is skipped or cancelled): nothing to import")
    rounds = _rounds(store)
    queued = _check(tasks, store, path, queue_round, rounds)
    latest = max(rounds)
    if rounds[latest]["status"] != "completed" and rounds[latest]["kind"] != "review":
        raise StoreError(f"round {latest} of {store.root} did not complete ({rounds[latest]['status']}): "
                         "finish it (rerun it) before importing reviews")
    target = latest if rounds[latest]["kind"] == "review" else latest + 1
    seen = {(r["image_id"], r["annotation_id"], r["reviewed_at"])
            for r in store.read("reviews", columns=["image_id", "annotation_id", "reviewed_at"]).to_pylist()}
    new = [t for t in tasks if (t.image_id, t.annotation_id, t.reviewed_at) not in seen]
    result = Imported(target, target != latest, len(tasks), len(new), len(tasks) - len(new),
                      sum(t.superseded for t in tasks))
    if not new and target == latest and rounds[latest]["status"] == "completed":
        result.round, result.created = latest, False
        result.seconds = time.perf_counter() - start
        return result  # every reviewed task is in already: nothing to add
    below = target - 1 if target != latest else _below(rounds, latest)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    now = dt.datetime.now(dt.timezone.utc)
    with store.writer(target) as writer:
        config = rounds[below]["config"]
        record_round(writer, "review", config, "running", rounds.get(target, {}).get("started_at") or now)
        if new:
            writer.write("reviews", f"import-{digest[:16]}-{len(seen)}", _ledger(new, target, queued, path, digest, now))
        if COPIED not in writer.done_shards():
            _copy(store, writer, below)
        result.applied = apply_reviews(store, writer)
        record_round(writer, "review", config, "completed", rounds.get(target, {}).get("started_at") or now)
    write_summary(store, target)
    result.seconds = time.perf_counter() - start
    return result


def _below(rounds: dict[int, dict], review_round: int) -> int:
    below = [r for r in rounds if r < review_round]
    if not below:
        raise StoreError(f"review round {review_round} has no round below it")
    return max(below)


def _ledger(tasks: list[ReviewedTask], round_id: int, queued: int, path: Path, digest: str, now: dt.datetime) -> pa.Table:
    rows = [{"round": round_id, "image_id": t.image_id, "task_id": t.task_id, "annotation_id": t.annotation_id,
             "reviewer": t.reviewer, "reviewed_at": t.reviewed_at, "imported_at": now, "queue_round": queued,
             "source": f"{path.name} sha256:{digest}", "answer": t.answer.to_json()} for t in tasks]
    return pa.Table.from_pylist(rows, schema=schema_for("reviews"))


def _copy(store: Store, writer, below: int) -> None:
    """The review round starts as a copy of round ``below``'s rows and gold metrics."""
    for table in COPY_TABLES:
        for path in store.files(table, below):
            writer.write(table, path.stem.removeprefix("shard-"), with_round(store.read_file(path, table), writer.round))
    metrics = store.read("metrics", below)
    metrics = metrics.filter(pc.invert(pc.is_in(metrics.column("family"), pa.array(COPY_METRICS))))
    if metrics.num_rows:
        writer.write("metrics", "copied", with_round(metrics, writer.round))
    writer.mark_done(COPIED, {"from_round": below})
