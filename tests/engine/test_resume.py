"""Resume by content: a rerun annotates exactly the images the round has not finished, whatever
was ingested in between or however the driver died, and a changed config is refused."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import Store, StoreError
from engine.round.config import RoundConfig, SpecialistSpec
from engine.round.run import run_round
from engine.round.runtime import Runtime

TABLES = (("texts", "text_id"), ("regions", "region_id"), ("triplets", "triplet_id"), ("rejected", "row_id"),
          ("failures", "image_id"))


def config(shard_size: int = 2, **options) -> RoundConfig:
    """RapidOCR over pool and gold: real rows (signs' words) and real drops (junk strings)."""
    return RoundConfig(specialists=(SpecialistSpec("rapidocr", {"threads": 1, **options}, workers=2, cpus=1.0),),
                       shard_size=shard_size, splits=("pool", "gold"))


def rows(store: Store, round_id: int = 1) -> dict[str, list]:
    """Every annotation id of the round, duplicates kept (a resumed round must have none)."""
    return {table: sorted(r[key] for r in store.read(table, round_id).to_pylist()) for table, key in TABLES}


def dataset(world, root: Path, splits: tuple[str, ...]) -> Store:
    store = Store(root, create=True)
    for split in splits:
        ingest(str(world.images(split)), store, IngestConfig(split=split))
    return store


@pytest.fixture(scope="module")
def uninterrupted(small_world, tmp_path_factory) -> dict[str, list]:
    """The rows of one uninterrupted round over pool and gold: what every resume must equal."""
    with Runtime(num_cpus=2):
        store = dataset(small_world, tmp_path_factory.mktemp("whole"), ("pool", "gold"))
        run_round(store, 1, config())
    whole = rows(store)
    assert whole["regions"] and all(len(ids) == len(set(ids)) for t, ids in whole.items() if t != "failures")
    return whole


def test_images_ingested_between_an_interruption_and_the_rerun_are_annotated_once(small_world, uninterrupted, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("pool",))
    with Runtime(num_cpus=2):
        run_round(store, 1, config())
        markers = sorted((store.root / "_markers" / "round=1").glob("shard-*.json"))
        for marker in markers[-3:]:  # the driver died after writing these shards' files, before their markers
            marker.unlink()
        ingest(str(small_world.images("gold")), store, IngestConfig(split="gold"))  # more images, other shards
        resumed = run_round(store, 1, config(shard_size=3))  # another shard size does not change the rows
    assert resumed.skipped == len(markers) - 3
    assert rows(store) == uninterrupted


def test_a_changed_config_is_refused_for_a_half_done_round(small_world, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("gold",))
    with Runtime(num_cpus=2):
        run_round(store, 1, config())
        before = rows(store)
        with pytest.raises(StoreError, match="round 1 was started with another configuration"):
            run_round(store, 1, config(min_score=0.9))
    assert rows(store) == before  # nothing written, nothing removed


DRIVER = textwrap.dedent("""
    import sys
    from engine import settings
    settings.apply()
    from engine.dataset.store import Store
    from engine.round.run import run_round
    from tests.engine.test_resume import config
    run_round(Store(sys.argv[1]), 1, config())
""")


def test_a_round_whose_driver_was_killed_resumes_to_the_uninterrupted_rows(small_world, uninterrupted, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("pool", "gold"))
    markers = store.root / "_markers" / "round=1"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(store.root)], cwd=Path(__file__).resolve().parents[2],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline and len(list(markers.glob("shard-*.json"))) < 2:
            time.sleep(0.2)
        assert driver.poll() is None, "the round finished (or failed) before it could be interrupted"
        started = psutil.Process(driver.pid).children(recursive=True)  # its Ray, to stop after the test
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: the state it leaves behind is the point
        driver.wait(timeout=30)
    finally:
        driver.kill()
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()
    done_before = len(list(markers.glob("shard-*.json")))
    with Runtime(num_cpus=2):
        resumed = run_round(store, 1, config())
    assert resumed.skipped == done_before and resumed.images > 0
    assert rows(store) == uninterrupted
    counts = collections.Counter(r["image_id"] for r in store.read("failures", 1).to_pylist())
    assert not counts  # no image failed, none was annotated twice
