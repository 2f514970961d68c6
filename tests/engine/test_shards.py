"""A round's shard plan: every readable image of its splits once, none it has finished, cut file by
file (the driver reads one ``images`` file at a time) and counted before any is read."""

from __future__ import annotations

import collections

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import Store
from engine.round.shards import plan_shards


def test_the_plan_covers_each_image_of_its_splits_once_file_by_file(small_world, tmp_path):
    store = Store(tmp_path / "ds", create=True)
    for split in ("pool", "gold"):
        ingest(str(small_world.images(split)), store, IngestConfig(split=split, shard_size=7))
    images = store.read("images").to_pylist()
    wanted = {r["image_id"]: r["uri"] for r in images if r["status"] == "ok" and r["split"] in ("pool", "gold")}
    files = store.files("images")
    assert len(files) > 2  # several ingest files per split: shards must not cross them

    plan = plan_shards(store, ("pool", "gold"), 3)
    shards = list(plan)
    assert len(shards) == len(plan) and sum(len(s.image_ids) for s in shards) == plan.images == len(wanted)
    seen = collections.Counter(i for s in shards for i in s.image_ids)
    assert set(seen) == set(wanted) and set(seen.values()) == {1}
    assert all(dict(zip(s.image_ids, s.uris)) == {i: wanted[i] for i in s.image_ids} for s in shards)
    by_file = {r["image_id"]: path for path in files for r in store.read_file(path, "images").to_pylist()}
    assert all(len({by_file[i] for i in s.image_ids}) == 1 for s in shards)
    assert all(list(s.image_ids) == sorted(s.image_ids) for s in shards)
    assert [s.index for s in shards] == list(range(len(shards)))

    done = set(sorted(wanted)[::2])
    rest = plan_shards(store, ("pool", "gold"), 3, done)
    assert {i for s in rest for i in s.image_ids} == set(wanted) - done and rest.images == len(wanted) - len(done)
    gold_only = plan_shards(store, ("gold",), 100)
    gold = {r["image_id"] for r in images if r["split"] == "gold" and r["status"] == "ok"}
    assert {i for s in gold_only for i in s.image_ids} == gold
    assert len(plan_shards(store, ("unlabelled",), 3)) == 0 and list(plan_shards(store, ("unlabelled",), 3)) == []


def test_the_plan_is_fixed_when_the_round_plans(small_world, tmp_path):
    """An ingest beside the round adds nothing to it; a file gone by the time it is read is skipped."""
    store = Store(tmp_path / "ds", create=True)
    ingest(str(small_world.images("pool")), store, IngestConfig(split="pool", shard_size=5))
    plan = plan_shards(store, ("pool", "gold"), 4)
    planned = plan.images
    ingest(str(small_world.images("gold")), store, IngestConfig(split="gold"))  # after planning
    gone = plan.todo[0][0]  # a file the plan reads
    lost = {r["image_id"] for r in store.read_file(gone, "images").to_pylist()}
    gone.unlink()
    ids = [i for s in plan for i in s.image_ids]
    assert len(ids) == planned - len(lost) and not set(ids) & lost
    gold = {r["image_id"] for r in store.read("images").to_pylist() if r["split"] == "gold"}
    assert gold and not set(ids) & gold
