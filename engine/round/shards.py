"""Splitting a round's images into shards: sorted by id and cut every ``shard_size``, so the same
images always make the same shards (what resume relies on)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store


@dataclass(frozen=True)
class Shard:
    index: int
    image_ids: tuple[str, ...]
    uris: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.index:05d}"


def plan_shards(store: Store, splits: tuple[str, ...], shard_size: int) -> list[Shard]:
    images = store.read("images", columns=["image_id", "uri", "split", "status"])
    images = images.filter(pc.and_(pc.equal(images.column("status"), "ok"),
                                   pc.is_in(images.column("split"), pa.array(splits, pa.string()))))
    images = images.sort_by("image_id")
    ids, uris = images.column("image_id").to_pylist(), images.column("uri").to_pylist()
    return [Shard(k, tuple(ids[s : s + shard_size]), tuple(uris[s : s + shard_size]))
            for k, s in enumerate(range(0, len(ids), shard_size))]
