"""Splitting a round's images into shards: the images not finished yet, sorted by id and cut every
``shard_size``. A shard is named by its content (a hash of its image ids), so a rerun that plans
other shards (more images ingested, a different shard size) never mistakes one for another:
resume is keyed by the images a completion marker lists, never by a shard's position."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store

log = logging.getLogger(__name__)
CONTENT_LABEL = re.compile(r"^c[0-9a-f]{16}$")
"""How a shard named by its content is spelt (other writers of a round use other names)."""


@dataclass(frozen=True)
class Shard:
    index: int
    image_ids: tuple[str, ...]
    uris: tuple[str, ...]

    @property
    def label(self) -> str:
        """``c`` + 16 hex digits of BLAKE2b over the shard's image ids."""
        return "c" + hashlib.blake2b("\n".join(self.image_ids).encode(), digest_size=8).hexdigest()

    def split(self) -> list[Shard]:
        """One shard per image (to find the image a crash belongs to)."""
        return [Shard(self.index, (i,), (u,)) for i, u in zip(self.image_ids, self.uris)]


@dataclass(frozen=True)
class ShardPlan:
    """The shards of a round still to do: the ids of its images, fixed when the round plans, kept
    per ``images`` file as Arrow; each file's uris are read when the round reaches it, and shards
    are cut file by file (in image id order within a file). The driver holds 16-character ids, not
    every image as Python objects (which cost 400 bytes an image: 38 GiB at 100M images; see
    docs/PERFORMANCE.md). An ingest that runs beside the round adds nothing to it (a rerun picks
    those images up) and an image whose row is gone by the time its file is read is skipped."""

    store: Store
    shard_size: int
    todo: tuple[tuple[Path, pa.Array], ...]
    """Each ``images`` file, and the sorted ids of its images the round has to do."""

    @property
    def images(self) -> int:
        return sum(len(ids) for _, ids in self.todo)

    def __len__(self) -> int:
        return sum(-(-len(ids) // self.shard_size) for _, ids in self.todo)

    def __iter__(self) -> Iterator[Shard]:
        k = 0
        for path, ids in self.todo:
            if not path.exists():
                log.warning("%s was removed since the round planned: its %d images are skipped", path, len(ids))
                continue
            rows = self.store.read_file(path, "images", columns=["image_id", "uri"])
            rows = rows.filter(pc.is_in(rows.column("image_id"), ids))
            rows = rows.take(pc.sort_indices(rows.column("image_id")))
            found, uris = rows.column("image_id").to_pylist(), rows.column("uri").to_pylist()
            for start in range(0, len(found), self.shard_size):
                yield Shard(k, tuple(found[start : start + self.shard_size]), tuple(uris[start : start + self.shard_size]))
                k += 1


def plan_shards(store: Store, splits: tuple[str, ...], shard_size: int, done: Collection[str] = ()) -> ShardPlan:
    """Shards of the readable images of ``splits`` that are not in ``done``, as of now."""
    wanted, finished = pa.array(splits, pa.string()), pa.array(sorted(done), pa.string())
    todo = []
    for path in store.files("images"):
        images = store.read_file(path, "images", columns=["image_id", "split", "status"])
        keep = pc.and_(pc.equal(images.column("status"), "ok"), pc.is_in(images.column("split"), wanted))
        if done:
            keep = pc.and_(keep, pc.invert(pc.is_in(images.column("image_id"), finished)))
        ids = images.filter(keep).column("image_id")
        ids = ids.take(pc.sort_indices(ids)).combine_chunks()
        if len(ids):
            todo.append((path, ids))
    return ShardPlan(store, shard_size, tuple(todo))
