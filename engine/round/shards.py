"""Splitting a round's images into shards: the images not finished yet, sorted by id and cut every
``shard_size``. A shard is named by its content (a hash of its image ids), so a rerun that plans
other shards (more images ingested, a different shard size) never mistakes one for another:
resume is keyed by the images a completion marker lists, never by a shard's position."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store

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
    """The shards of a round still to do, cut file by file from the ingested images (in image id
    order within each ``images`` file) and read only when the round reaches them: the driver
    holds one file's images at a time, not the whole pool (the whole pool, as Python objects,
    cost 400 bytes an image: 38 GiB at 100M images; see docs/PERFORMANCE.md)."""

    store: Store
    splits: tuple[str, ...]
    shard_size: int
    done: pa.Array
    counts: tuple[tuple[Path, int], ...]
    """Each ``images`` file, and how many of its images the round still has to do."""

    @property
    def images(self) -> int:
        return sum(n for _, n in self.counts)

    def __len__(self) -> int:
        return sum(-(-n // self.shard_size) for _, n in self.counts)

    def rows(self, path: Path, columns: tuple[str, ...] = ("image_id", "uri")) -> pa.Table:
        """The images of one file the round has to do, sorted by id."""
        images = self.store.read_file(path, "images", columns=["image_id", "uri", "split", "status"])
        keep = pc.and_(pc.equal(images.column("status"), "ok"),
                       pc.is_in(images.column("split"), pa.array(self.splits, pa.string())))
        if len(self.done):
            keep = pc.and_(keep, pc.invert(pc.is_in(images.column("image_id"), self.done)))
        images = images.filter(keep).select(list(columns))
        return images.take(pc.sort_indices(images.column("image_id")))

    def __iter__(self) -> Iterator[Shard]:
        k = 0
        for path, n in self.counts:
            if not n:
                continue
            rows = self.rows(path)
            ids, uris = rows.column("image_id").to_pylist(), rows.column("uri").to_pylist()
            for start in range(0, len(ids), self.shard_size):
                yield Shard(k, tuple(ids[start : start + self.shard_size]), tuple(uris[start : start + self.shard_size]))
                k += 1


def plan_shards(store: Store, splits: tuple[str, ...], shard_size: int, done: Collection[str] = ()) -> ShardPlan:
    """Shards of the readable images of ``splits`` that are not in ``done`` (counted now, read as
    the round reaches them)."""
    plan = ShardPlan(store, tuple(splits), shard_size, pa.array(sorted(done), pa.string()), ())
    counts = tuple((path, plan.rows(path, ("image_id",)).num_rows) for path in store.files("images"))
    return ShardPlan(store, tuple(splits), shard_size, plan.done, counts)
