"""Splitting a round's images into shards: the images not finished yet, sorted by id and cut every
``shard_size``. A shard is named by its content (a hash of its image ids), so a rerun that plans
other shards (more images ingested, a different shard size) never mistakes one for another:
resume is keyed by the images a completion marker lists, never by a shard's position."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass

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


def plan_shards(store: Store, splits: tuple[str, ...], shard_size: int, done: Collection[str] = ()) -> list[Shard]:
    """Shards of the readable images of ``splits`` that are not in ``done``."""
    images = store.read("images", columns=["image_id", "uri", "split", "status"])
    images = images.filter(pc.and_(pc.equal(images.column("status"), "ok"),
                                   pc.is_in(images.column("split"), pa.array(splits, pa.string()))))
    if done:
        images = images.filter(pc.invert(pc.is_in(images.column("image_id"), pa.array(sorted(done), pa.string()))))
    images = images.sort_by("image_id")
    ids, uris = images.column("image_id").to_pylist(), images.column("uri").to_pylist()
    return [Shard(k, tuple(ids[s : s + shard_size]), tuple(uris[s : s + shard_size]))
            for k, s in enumerate(range(0, len(ids), shard_size))]
