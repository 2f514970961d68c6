"""A disk that fills during a round: no shard is left half-written, the error says what to do,
and once there is space again a rerun ends with the rows of an uninterrupted round."""

from __future__ import annotations

import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from engine.dataset.store import StoreError
from engine.round.run import run_round
from engine.round.runtime import Runtime
from tests.engine.test_resume import config, dataset, rows


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (needs the right to mount, as root in a container has; else skipped)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def used(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_a_round_that_fills_the_disk_can_be_rerun_to_the_uninterrupted_rows(small_world, yolo_weights, small_disk):
    with Runtime(num_cpus=2):
        whole_store = dataset(small_world, small_disk / "whole", ("pool", "gold"))
        before = shutil.disk_usage(small_disk).free
        run_round(whole_store, 1, config(str(yolo_weights)))
        round_bytes = before - shutil.disk_usage(small_disk).free  # what a round takes on this disk, blocks included
        whole = rows(whole_store)
        store = dataset(small_world, small_disk / "ds", ("pool", "gold"))
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * max(0, shutil.disk_usage(small_disk).free - round_bytes // 2))  # room for half
        with pytest.raises(StoreError, match="no space left"):
            run_round(store, 1, config(str(yolo_weights)))
        assert store.temp_files() == []  # nothing half-written
        markers = list((store.root / "_markers" / "round=1").glob("shard-*.json"))
        for marker in markers:  # every shard a marker lists reads back whole
            label = marker.stem.removeprefix("shard-")
            for table in ("regions", "rejected"):
                pq.read_table(store.shard_path(table, 1, label))
        ballast.unlink()  # space again
        resumed = run_round(store, 1, config(str(yolo_weights)))
    assert 0 < len(markers) and resumed.skipped == len(markers)
    assert rows(store) == whole
