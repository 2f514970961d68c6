"""Ingestion: a folder or list of images becomes rows of the ``images`` table.

Each image is read and fully decoded once (so a truncated file is caught here, not mid-round);
its id is the hash of its bytes, so the same image under two names is one image. An image that
cannot be used becomes a row with status ``error`` and the reason; the others go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from engine.dataset.images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from engine.dataset.sources import list_source, read_bytes
from engine.dataset.store import Store
from schemas import SPLITS, schema_for
from schemas.hashing import content_id, fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    split: str = "pool"
    max_pixels: int = DEFAULT_MAX_PIXELS
    shard_size: int = 5000
    workers: int = 0
    """Threads that read and decode (0: one per CPU)."""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


@dataclass
class IngestSummary:
    ok: int = 0
    errors: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    """(uri, uri of the identical image kept)."""
    already_ingested: int = 0
    skipped_files: int = 0
    shards: list[str] = field(default_factory=list)
    error_rows: list[dict] = field(default_factory=list)


def probe(uri: str, split: str, max_pixels: int) -> dict:
    """The ``images`` row of one URI: size and format, or status error with the reason."""
    row = {"uri": uri, "width": None, "height": None, "format": None, "split": split,
           "status": "ok", "error": None, "round": 0}
    try:
        data = read_bytes(uri)
    except OSError as err:
        return {**row, "image_id": content_id(b"unreadable:" + uri.encode()), "status": "error",
                "error": f"unreadable: {err}"}
    row["image_id"] = content_id(data)
    try:
        image = decode_image(data, max_pixels)
    except ImageError as err:
        return {**row, "status": "error", "error": str(err)}
    if image.frames > 1:
        log.info("%s has %d frames; the first is used", uri, image.frames)
    return {**row, "width": image.width, "height": image.height, "format": image.format}


def ingest(source: str, store: Store, config: IngestConfig = IngestConfig(),
           progress: Callable[[int], None] | None = None) -> IngestSummary:
    """Ingest every image of ``source`` into ``store`` (round 0, shards named after the source).

    Rerunning the same source replaces its own shards; an image already ingested from another
    source is not added twice.
    """
    uris, skipped = list_source(source)
    summary = IngestSummary(skipped_files=skipped)
    prefix = f"ingest-{config.split}-{fingerprint(str(source))}"
    known = _ingested_elsewhere(store, prefix)
    kept: dict[str, str] = {}
    workers = config.workers or os.cpu_count() or 1
    with store.writer(0) as writer, ThreadPoolExecutor(max_workers=workers) as pool:
        for shard, start in enumerate(range(0, max(len(uris), 1), config.shard_size)):
            chunk = uris[start : start + config.shard_size]
            rows = []
            for row in pool.map(lambda u: probe(u, config.split, config.max_pixels), chunk):
                if row["image_id"] in kept:
                    summary.duplicates.append((row["uri"], kept[row["image_id"]]))
                elif row["image_id"] in known:
                    summary.already_ingested += 1
                else:
                    kept[row["image_id"]] = row["uri"]
                    rows.append(row)
                    if row["status"] == "ok":
                        summary.ok += 1
                    else:
                        summary.errors += 1
                        summary.error_rows.append(row)
                        log.warning("%s: %s", row["uri"], row["error"])
            name = f"{prefix}-{shard:05d}"
            writer.write("images", name, pa.Table.from_pylist(rows, schema=schema_for("images")))
            summary.shards.append(name)
            if progress:
                progress(len(chunk))
        for stale in store.files("images", 0):
            label = stale.stem.removeprefix("shard-")
            if label.startswith(prefix) and label not in summary.shards:
                stale.unlink()  # a rerun with fewer images: drop its surplus shards
    return summary


def _ingested_elsewhere(store: Store, prefix: str) -> set[str]:
    ids: set[str] = set()
    for path in store.files("images"):
        if not path.stem.removeprefix("shard-").startswith(prefix):
            ids.update(store.read_file(path, "images", ["image_id"]).column("image_id").to_pylist())
    return ids
