"""What a specialist trains on: images (id -> uri, size) and their annotations, as Arrow tables.

From the world's seed truth at bootstrap, or from a round's kept annotations (plus the seed
truth) at refinement. Gold images are refused: they are for evaluation only.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.sources import load_rgb
from engine.dataset.store import Store
from engine.evaluation.gold import GoldGuard
from engine.world.make import World
from specialists.training.trainer import TrainingSet

TABLES = ("texts", "regions", "triplets")


def _images(store: Store, splits: tuple[str, ...]) -> pa.Table:
    images = store.read("images", 0)
    ok = pc.and_(pc.is_in(images.column("split"), pa.array(splits, pa.string())), pc.equal(images.column("status"), "ok"))
    return images.filter(ok)


def _subset(table: pa.Table, ids: list[str]) -> pa.Table:
    return table.filter(pc.is_in(table.column("image_id"), pa.array(ids, pa.string())))


def load_training_set(store: Store, round_id: int, splits: tuple[str, ...], guard: GoldGuard,
                      images_from: Store | None = None, exhaustive: bool = True) -> TrainingSet:
    """Annotations of round ``round_id`` in ``store`` on images of ``splits``.

    ``images_from`` is the store that lists the images (default: ``store``), e.g. the dataset
    when the annotations are a round of it. ``exhaustive``: the annotations list every object of
    their images (truth), not only what a round kept."""
    images = _images(images_from or store, splits)
    ids = images.column("image_id").to_pylist()
    guard.check(ids, "training")
    tables = {t: _subset(store.read(t, round_id), ids) for t in TABLES}
    uris = dict(zip(ids, images.column("uri").to_pylist()))
    sizes = {i: (int(w), int(h)) for i, w, h in zip(ids, images.column("width").to_pylist(), images.column("height").to_pylist())}
    return TrainingSet(uris, sizes, tables, load_rgb, frozenset(ids) if exhaustive else frozenset())


def gold_stores(world: World) -> tuple[Store, Store | None]:
    """A world's gold and, when it has one, its seed-gold."""
    return Store(world.gold), Store(world.seed_gold) if world.seed_gold else None


def world_training_set(world: World, splits: tuple[str, ...]) -> TrainingSet:
    """A world's truth of ``splits``, none of its gold or seed-gold images in it."""
    return load_training_set(Store(world.truth), 0, splits, GoldGuard.from_stores(*(s for s in gold_stores(world) if s)))
