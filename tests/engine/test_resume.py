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
from filters.pipeline import FilterConfig
from filters.regions import RegionFilterConfig

TABLES = (("texts", "text_id"), ("regions", "region_id"), ("triplets", "triplet_id"), ("rejected", "row_id"),
          ("failures", "image_id"))


def config(weights: str, shard_size: int = 2, conf: float = 0.0) -> RoundConfig:
    """A small YOLO (fixed random weights: many low boxes, real drops) over pool and gold."""
    lenient = FilterConfig(regions=RegionFilterConfig(min_score=0.0, max_area_fraction=1.0))
    yolo = SpecialistSpec("yolo", {"weights": weights, "imgsz": 160, "conf": conf, "max_det": 5}, cpus=1.0)
    return RoundConfig(specialists=(yolo,), shard_size=shard_size, splits=("pool", "gold"), filters=lenient)


def rows(store: Store, round_id: int = 1) -> dict[str, list]:
    """Every annotation id of the round, duplicates kept (a resumed round must have none)."""
    return {table: sorted(r[key] for r in store.read(table, round_id).to_pylist()) for table, key in TABLES}


def dataset(world, root: Path, splits: tuple[str, ...]) -> Store:
    store = Store(root, create=True)
    for split in splits:
        ingest(str(world.images(split)), store, IngestConfig(split=split))
    return store


@pytest.fixture(scope="module")
def uninterrupted(small_world, yolo_weights, tmp_path_factory) -> dict[str, list]:
    """The rows of one uninterrupted round over pool and gold: what every resume must equal."""
    with Runtime(num_cpus=2):
        store = dataset(small_world, tmp_path_factory.mktemp("whole"), ("pool", "gold"))
        run_round(store, 1, config(str(yolo_weights)))
    whole = rows(store)
    assert whole["regions"] and all(len(ids) == len(set(ids)) for t, ids in whole.items() if t != "failures")
    return whole


def test_images_ingested_between_an_interruption_and_the_rerun_are_annotated_once(small_world, yolo_weights,
                                                                                  uninterrupted, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("pool",))
    with Runtime(num_cpus=2):
        run_round(store, 1, config(str(yolo_weights)))
        markers = sorted((store.root / "_markers" / "round=1").glob("shard-*.json"))
        for marker in markers[-3:]:  # the driver died after writing these shards' files, before their markers
            marker.unlink()
        ingest(str(small_world.images("gold")), store, IngestConfig(split="gold"))  # more images, other shards
        resumed = run_round(store, 1, config(str(yolo_weights), shard_size=3))  # the shard size is free to change
    assert resumed.skipped == len(markers) - 3
    assert rows(store) == uninterrupted


def test_a_changed_config_is_refused_for_a_half_done_round(small_world, yolo_weights, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("gold",))
    with Runtime(num_cpus=2):
        run_round(store, 1, config(str(yolo_weights)))
        before = rows(store)
        with pytest.raises(StoreError, match="round 1 was started with another configuration"):
            run_round(store, 1, config(str(yolo_weights), conf=0.5))
    assert rows(store) == before  # nothing written, nothing removed


DRIVER = textwrap.dedent("""
    import sys
    from engine import settings
    settings.apply()
    from engine.dataset.store import Store
    from engine.round.run import run_round
    from tests.engine.test_resume import config
    run_round(Store(sys.argv[1]), 1, config(sys.argv[2]))
""")


def test_a_round_whose_driver_was_killed_resumes_to_the_uninterrupted_rows(small_world, yolo_weights, uninterrupted,
                                                                           tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("pool", "gold"))
    markers = store.root / "_markers" / "round=1"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(store.root), str(yolo_weights)], cwd=Path(__file__).resolve().parents[2],
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
        resumed = run_round(store, 1, config(str(yolo_weights)))
    assert resumed.skipped == done_before and resumed.images > 0
    assert rows(store) == uninterrupted
    counts = collections.Counter(r["image_id"] for r in store.read("failures", 1).to_pylist())
    assert not counts  # no image failed, none was annotated twice
