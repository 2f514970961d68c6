"""The queue handed to people: the top K entries as Label Studio tasks (the round's rows as
pre-annotations), the labeling config they need and the whole ranking with its reasons."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store, write_atomic
from engine.review.importer import dataset_id, known_labels
from engine.review.label_studio import image_url, label_config, task
from engine.review.queue import QueueEntry

log = logging.getLogger(__name__)
TASKS = "tasks.json"
CONFIG = "label_config.xml"
RANKING = "queue.jsonl"


@dataclass(frozen=True)
class QueueFiles:
    tasks: Path
    config: Path
    ranking: Path
    images: int


def _write(path: Path, text: str) -> None:
    body = text.encode()
    write_atomic(path, lambda tmp: tmp.write_bytes(body))


def write_queue(store: Store, round_id: int, entries: list[QueueEntry], k: int, out: str | Path,
                local_files_root: str | Path | None = None) -> QueueFiles:
    """Write ``tasks.json`` (top ``k``), ``label_config.xml`` and ``queue.jsonl`` (every entry) under ``out``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = Path(out)
    top = entries[:k]
    ids = pa.array([e.image_id for e in top], pa.string())
    images = store.read("images", 0, columns=["image_id", "uri", "width", "height"])
    images = {r["image_id"]: r for r in images.filter(pc.is_in(images.column("image_id"), ids)).to_pylist()}
    regions = store.read("regions", round_id, columns=["image_id", "kind", "box", "label", "score"])
    regions = regions.filter(pc.and_(pc.is_in(regions.column("image_id"), ids),
                                     pc.is_in(regions.column("kind"), pa.array(["object", "ocr"]))))
    texts = store.read("texts", round_id, columns=["image_id", "granularity", "text"])
    texts = texts.filter(pc.is_in(texts.column("image_id"), ids))
    by_image: dict[str, tuple[list, list]] = {e.image_id: ([], []) for e in top}
    for r in regions.to_pylist():
        by_image[r["image_id"]][0].append(r)
    for t in texts.to_pylist():
        by_image[t["image_id"]][1].append(t)
    root = Path(local_files_root) if local_files_root else None
    dataset = dataset_id(store)
    tasks = [task(e.image_id, image_url(images[e.image_id]["uri"], root),
                  (images[e.image_id]["width"], images[e.image_id]["height"]), dataset, round_id, e.rank, e.why,
                  *by_image[e.image_id]) for e in top]
    files = QueueFiles(out / TASKS, out / CONFIG, out / RANKING, len(tasks))
    _write(files.config, label_config(sorted(known_labels(store))))
    _write(files.tasks, json.dumps(tasks, indent=1))
    _write(files.ranking, "".join(json.dumps(e.to_dict()) + "\n" for e in entries))
    log.info("queue of round %d: %d task(s) in %s", round_id, len(tasks), files.tasks)
    return files
