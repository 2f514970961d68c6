"""A simulated reviewer: answers a queue's tasks from the world's truth, as a person who fixes
every box, text and description would, in Label Studio's export format. The review bench
(``bench/review.py``) and the tests use it to measure what a review is worth without people."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store, write_atomic
from engine.review.label_studio import results

REVIEWER = "simulated-reviewer@fld"


def answer_from_truth(tasks_path: str | Path, truth: Store, out: str | Path, when: dt.datetime | None = None) -> Path:
    """Write ``out``: the tasks of ``tasks_path`` (``fld review queue``'s tasks.json), each with one
    submitted annotation that is the truth of its image (objects, OCR text, descriptions)."""
    tasks = json.loads(Path(tasks_path).read_text())
    when = (when or dt.datetime.now(dt.timezone.utc)).isoformat()
    ids = pa.array([t["data"]["image_id"] for t in tasks], pa.string())
    sizes = truth.image_sizes()
    regions = truth.read("regions", 0, columns=["image_id", "kind", "box", "label"])
    regions = regions.filter(pc.and_(pc.is_in(regions.column("image_id"), ids),
                                     pc.is_in(regions.column("kind"), pa.array(["object", "ocr"]))))
    texts = truth.read("texts", 0, columns=["image_id", "granularity", "text"])
    texts = texts.filter(pc.is_in(texts.column("image_id"), ids))
    by_image: dict[str, tuple[list, list]] = {}
    for r in regions.to_pylist():
        by_image.setdefault(r["image_id"], ([], []))[0].append(r)
    for t in texts.to_pylist():
        by_image.setdefault(t["image_id"], ([], []))[1].append(t)
    exported = []
    for n, t in enumerate(tasks, 1):
        image = t["data"]["image_id"]
        if image not in sizes:
            raise ValueError(f"task {n}: image {image} is not in the truth of {truth.root}")
        found = by_image.get(image, ([], []))
        exported.append({"id": n, "data": t["data"], "predictions": t.get("predictions", []), "annotations": [
            {"id": n, "completed_by": {"id": 1, "email": REVIEWER}, "created_at": when, "updated_at": when,
             "was_cancelled": False, "result": results(found[0], found[1], sizes[image])}]})
    body = json.dumps(exported).encode()
    write_atomic(Path(out), lambda tmp: tmp.write_bytes(body))
    return Path(out)
