"""The gold split cannot reach training: its ids are refused wherever they turn up."""

from __future__ import annotations

import shutil

import pytest

from engine.dataset.ingest import ingest
from engine.dataset.store import Store
from engine.evaluation.gold import GoldGuard, GoldLeakError
from schemas.hashing import content_id


def test_gold_copied_into_the_pool_under_another_name_is_caught(small_world, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(small_world.images("pool"), pool)
    sneaky = next(small_world.images("gold").iterdir())
    shutil.copy(sneaky, pool / "renamed.png")
    data = Store(tmp_path / "ds", create=True)
    ingest(str(pool), data)
    guard = GoldGuard.from_stores(Store(small_world.gold))
    pool_ids = data.read("images").column("image_id").to_pylist()
    with pytest.raises(GoldLeakError, match="1 image\\(s\\) of the gold split are in the training data"):
        guard.check(pool_ids)
    clean = [i for i in pool_ids if i != content_id(sneaky.read_bytes())]
    guard.check(clean)  # no error


def test_gold_rows_of_a_dataset_are_known(small_world, tmp_path):
    data = Store(tmp_path / "ds", create=True)
    from engine.dataset.ingest import IngestConfig

    ingest(str(small_world.images("gold")), data, IngestConfig(split="gold"))
    ingest(str(small_world.images("seed")), data, IngestConfig(split="seed"))
    guard = GoldGuard.from_stores(data)
    assert len(guard.gold_ids) == small_world.config.split_counts()["gold"]
    seed_ids = Store(small_world.truth).read("images").column("image_id").to_pylist()
    guard.check(seed_ids)
