"""A worker whose process dies on an image is replaced a bounded number of times: the image gets
a ``failures`` row, the rest of the round goes on, ``fld rounds`` counts it; a round whose
workers keep dying stops with a clear error instead of looping."""

from __future__ import annotations

import collections

import pytest

from engine.dataset.rounds import rounds_table
from engine.round.config import RoundConfig, SpecialistSpec
from engine.round.run import run_round
from engine.round.runtime import Runtime, WorkerDeaths
from filters.pipeline import FilterConfig
from filters.regions import RegionFilterConfig
from tests.engine.test_resume import dataset

CRASHING = "tests.crashing_specialist:build"


def config(die_on: list[str], **kw) -> RoundConfig:
    spec = SpecialistSpec(CRASHING, {"box": [0.2, 0.2, 0.8, 0.8], "label": "circle", "die_on": die_on},
                          key="crashing", cpus=1.0)
    lenient = FilterConfig(regions=RegionFilterConfig(min_score=0.0, max_area_fraction=1.0))
    return RoundConfig(specialists=(spec,), shard_size=4, splits=("pool", "gold"), filters=lenient, **kw)


@pytest.mark.parametrize("placement, stage", [("pools", "crashing"), ("fused", "fused")])
def test_an_image_that_kills_its_worker_gets_a_failure_row_and_the_round_goes_on(small_world, tmp_path, placement,
                                                                                  stage):
    store = dataset(small_world, tmp_path / "ds", ("pool", "gold"))
    ids = sorted(store.read("images").column("image_id").to_pylist())
    victim = ids[5]  # in the middle of the second shard, other shards in flight beside it
    with Runtime(num_cpus=2):
        summary = run_round(store, 1, config([victim], placement=placement))
    failures = store.read("failures", 1).to_pylist()
    assert [(f["image_id"], f["stage"]) for f in failures] == [(victim, stage)]  # the pool that died
    assert "died on this image 2 times" in failures[0]["error"]
    regions = collections.Counter(store.read("regions", 1).column("image_id").to_pylist())
    assert set(regions) == set(ids) - {victim} and set(regions.values()) == {1}  # nothing lost, nothing doubled
    assert summary.failures == 1
    table = rounds_table(store)
    row = dict(zip(table.columns, table.rows[0]))
    assert row["failed_images"] == 1 and row["status"] == "completed"


def test_a_round_whose_workers_keep_dying_stops_with_a_clear_error(small_world, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("gold",))
    ids = store.read("images").column("image_id").to_pylist()
    with Runtime(num_cpus=2), pytest.raises(WorkerDeaths, match="over max_worker_deaths=3"):
        run_round(store, 1, config(ids, max_worker_deaths=3))
    table = rounds_table(store)
    assert dict(zip(table.columns, table.rows[0]))["status"] == "failed"


@pytest.mark.parametrize("kwargs", [{"crash_tries": 0}, {"crash_tries": 3, "max_worker_deaths": 2}])
def test_bad_crash_bounds_are_refused(kwargs):
    with pytest.raises(ValueError, match="crash_tries"):
        config([], **kwargs)
