"""A round started while another writer ingests into the same dataset: it annotates the images
whose shards were complete when it planned, never a half-written one, and a rerun after the
ingest annotates the rest: the rows of one uninterrupted round, whatever the interleaving."""

from __future__ import annotations

import threading

import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.round.run import run_round
from engine.round.runtime import Runtime
from tests.engine.test_resume import config, dataset, rows, uninterrupted  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow  # the same guarantee as test_resume's ingest-between test, by another path


def test_a_round_beside_an_ingest_then_a_rerun_gives_the_uninterrupted_rows(small_world, yolo_weights, uninterrupted,
                                                                            tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("pool",))
    errors: list[BaseException] = []

    def ingest_gold() -> None:
        try:  # one image a shard: many writes for the round to land between
            ingest(str(small_world.images("gold")), store, IngestConfig(split="gold", shard_size=1))
        except BaseException as err:  # surfaced below
            errors.append(err)

    with Runtime(num_cpus=2):
        writer = threading.Thread(target=ingest_gold)
        writer.start()
        first = run_round(store, 1, config(str(yolo_weights)))
        writer.join(timeout=300)
        assert not errors and not writer.is_alive()
        rerun = run_round(store, 1, config(str(yolo_weights)))
    assert first.images + rerun.images == store.read("images").num_rows
    assert rows(store) == uninterrupted
