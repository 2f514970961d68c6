"""Faults a user will meet, injected one by one, and what survived: rows lost and rows doubled
against an uninterrupted round, failure rows, seconds to recover, processes left behind; then
the peak memory of a large ingest and of a round over it.

    python bench/faults.py [--images 10000] [--no-round]

Goals (issue 17): rows lost 0, rows doubled 0, nothing left behind. The same faults are tests
(tests/engine/test_resume.py, test_bounded_failure.py, test_disk_full.py,
test_concurrent_ingest.py, test_nothing_left_behind.py, test_s3.py); this script measures them.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from engine import settings  # noqa: E402
from engine.dataset.ingest import IngestConfig, ingest  # noqa: E402
from engine.dataset.sources import SourceError  # noqa: E402
from engine.dataset.store import Store, StoreError  # noqa: E402
from engine.round.config import RoundConfig, SpecialistSpec  # noqa: E402
from engine.round.run import run_round  # noqa: E402
from engine.round.runtime import Runtime  # noqa: E402
from engine.world.config import WorldConfig  # noqa: E402
from engine.world.make import make_world  # noqa: E402
from filters.pipeline import FilterConfig  # noqa: E402
from filters.regions import RegionFilterConfig  # noqa: E402

LENIENT = FilterConfig(regions=RegionFilterConfig(min_score=0.0, max_area_fraction=1.0))
CRASHING = "tests.crashing_specialist:build"
TABLES = (("texts", "text_id"), ("regions", "region_id"), ("triplets", "triplet_id"), ("rejected", "row_id"))


def yolo_config(weights: Path, splits=("pool", "gold"), shard_size: int = 2) -> RoundConfig:
    spec = SpecialistSpec("yolo", {"weights": str(weights), "imgsz": 160, "conf": 0.0, "max_det": 5}, cpus=1.0)
    return RoundConfig(specialists=(spec,), shard_size=shard_size, splits=splits, filters=LENIENT)


def toy_config(die_on: list[str]) -> RoundConfig:
    spec = SpecialistSpec(CRASHING, {"box": [0.2, 0.2, 0.8, 0.8], "label": "circle", "die_on": die_on}, key="crashing")
    return RoundConfig(specialists=(spec,), shard_size=4, splits=("pool", "gold"), filters=LENIENT)


def ids(store: Store) -> collections.Counter:
    """Every annotation id of round 1 (a resumed round must equal the uninterrupted one's)."""
    return collections.Counter(f"{t}:{r['image_id']}:{r[k]}" for t, k in TABLES
                               for r in store.read(t, 1).select(["image_id", k]).to_pylist())


def compare(got: collections.Counter, want: collections.Counter) -> dict:
    return {"rows_lost": sum((want - got).values()), "rows_doubled": sum(v - 1 for v in got.values() if v > 1)}


def new_store(world, root: Path, splits=("pool", "gold")) -> Store:
    store = Store(root, create=True)
    for split in splits:
        ingest(str(world.images(split)), store, IngestConfig(split=split))
    return store


DRIVER = textwrap.dedent("""
    import sys
    from engine import settings
    settings.apply()
    from engine.dataset.store import Store
    from engine.round.run import run_round
    from bench.faults import yolo_config
    from pathlib import Path
    run_round(Store(sys.argv[1]), 1, yolo_config(Path(sys.argv[2]), tuple(sys.argv[3].split(","))))
""")


def kill_driver_mid_round(store: Store, weights: Path, splits: str) -> int:
    """Run a round in a driver process, kill -9 it after two shards; returns the processes it
    started that were still running 15 s later."""
    markers = store.root / "_markers" / "round=1"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(store.root), str(weights), splits], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline and len(list(markers.glob("*.json"))) < 2:
        time.sleep(0.2)
    started = psutil.Process(driver.pid).children(recursive=True)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    _, alive = psutil.wait_procs(started, timeout=15)
    for process in alive:
        process.kill()
    return len(alive)


def fault_rows(world, weights: Path, work: Path) -> list[dict]:
    rows = []
    with Runtime(num_cpus=2):
        baseline = new_store(world, work / "baseline")
        run_round(baseline, 1, yolo_config(weights))
        want = ids(baseline)

    store = new_store(world, work / "killed")
    left = kill_driver_mid_round(store, weights, "pool,gold")
    start = time.perf_counter()
    with Runtime(num_cpus=2):
        run_round(store, 1, yolo_config(weights))
    rows.append({"fault": "driver kill -9 mid-round, then rerun", **compare(ids(store), want), "failure_rows": 0,
                 "recover_s": time.perf_counter() - start, "left_behind": left})

    store = new_store(world, work / "ingested", ("pool",))
    left = kill_driver_mid_round(store, weights, "pool,gold")
    ingest(str(world.images("gold")), store, IngestConfig(split="gold"))
    start = time.perf_counter()
    with Runtime(num_cpus=2):
        run_round(store, 1, yolo_config(weights, shard_size=3))
    rows.append({"fault": "kill -9, more images ingested, rerun (other shard size)", **compare(ids(store), want),
                 "failure_rows": 0, "recover_s": time.perf_counter() - start, "left_behind": left})

    store = new_store(world, work / "beside", ("pool",))
    start = time.perf_counter()
    with Runtime(num_cpus=2):
        writer = threading.Thread(target=ingest, args=(str(world.images("gold")), store, IngestConfig(split="gold", shard_size=1)))
        writer.start()
        run_round(store, 1, yolo_config(weights))
        writer.join()
        run_round(store, 1, yolo_config(weights))
    rows.append({"fault": "round beside a concurrent ingest, then rerun", **compare(ids(store), want),
                 "failure_rows": 0, "recover_s": time.perf_counter() - start, "left_behind": 0})

    with Runtime(num_cpus=2):
        clean = new_store(world, work / "toy")
        run_round(clean, 1, toy_config([]))
        victim = sorted(clean.read("images").column("image_id").to_pylist())[5]
        crashed = new_store(world, work / "crash")
        start = time.perf_counter()
        summary = run_round(crashed, 1, toy_config([victim]))
        seconds = time.perf_counter() - start
    expected = collections.Counter({k: v for k, v in ids(clean).items() if k.split(":")[1] != victim})
    got = ids(crashed)
    rows.append({"fault": "a worker process dies on one image (every time)", **compare(got, expected),
                 "failure_rows": summary.failures, "recover_s": seconds, "left_behind": 0})

    rows.append(disk_full(world, weights, work, want))

    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    start = time.perf_counter()
    try:
        ingest("s3://bucket/prefix/", Store(work / "s3", create=True))
        refused = "no"
    except SourceError:
        refused = "yes"
    os.environ.pop("AWS_ENDPOINT_URL")
    rows.append({"fault": f"S3 endpoint unreachable (refused: {refused})", "rows_lost": 0, "rows_doubled": 0,
                 "failure_rows": 0, "recover_s": time.perf_counter() - start, "left_behind": 0})
    return rows


def disk_full(world, weights: Path, work: Path, want) -> dict:
    disk = work / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        return {"fault": "disk full mid-round (skipped: cannot mount tmpfs)", "rows_lost": -1, "rows_doubled": -1,
                "failure_rows": 0, "recover_s": 0.0, "left_behind": 0}
    try:
        store = new_store(world, disk / "ds")
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * max(0, shutil.disk_usage(disk).free - 96 * 1024))
        with Runtime(num_cpus=2):
            try:
                run_round(store, 1, yolo_config(weights))
            except StoreError:
                pass
            ballast.unlink()
            start = time.perf_counter()
            run_round(store, 1, yolo_config(weights))
        return {"fault": "disk full mid-round, space freed, rerun", **compare(ids(store), want), "failure_rows": 0,
                "recover_s": time.perf_counter() - start, "left_behind": 0}
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def write_images(folder: Path, n: int) -> None:
    """``n`` small distinct PNGs (a shape at a place that differs per image)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        pixels = np.full((96, 96, 3), 235, np.uint8)
        x, y, s = rng.integers(0, 64), rng.integers(0, 64), rng.integers(8, 32)
        pixels[y : y + s, x : x + s] = rng.integers(0, 255, 3, dtype=np.uint8)
        pixels[0, 0] = [k % 256, (k // 256) % 256, k // 65536]  # never two identical images
        Image.fromarray(pixels).save(folder / f"{k:06d}.png")


MEASURE = textwrap.dedent("""
    import resource, sys, time
    from engine import settings
    settings.apply()
    from engine.dataset.ingest import IngestConfig, ingest
    from engine.dataset.store import Store
    start = time.perf_counter()
    if sys.argv[1] == "ingest":
        ingest(sys.argv[3], Store(sys.argv[2], create=True), IngestConfig(split="pool"))
    else:
        from engine.round.run import run_round
        from bench.faults import yolo_config
        from pathlib import Path
        run_round(Store(sys.argv[2]), 1, yolo_config(Path(sys.argv[3]), ("pool",), shard_size=64))
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]  # KiB, since exec
    print(time.perf_counter() - start, peak)
""")


def peak_memory(what: str, store: Path, argument: str) -> dict:
    """Seconds, the driver's peak RSS, and the peak PSS (shared pages split between the processes that
    map them, so Ray's shared object store counts once) summed over every process it started."""
    process = subprocess.Popen([sys.executable, "-c", MEASURE, what, str(store), argument], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    parent, peak_all = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            family = [parent, *parent.children(recursive=True)]
            peak_all = max(peak_all, sum(p.memory_full_info().pss for p in family if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(1.0)
    seconds, driver_kib = process.stdout.read().split()
    return {"seconds": float(seconds), "driver_peak_mib": int(driver_kib) / 1024, "all_processes_peak_pss_mib": peak_all / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="Images of the memory measurement.")
    parser.add_argument("--no-round", action="store_true", help="Measure the ingest only, not a round over it.")
    args = parser.parse_args()
    settings.apply()
    work = Path(tempfile.mkdtemp(prefix="fld-faults-"))
    import torch
    from ultralytics import YOLO

    from specialists.yolo import configure_ultralytics

    configure_ultralytics()
    torch.manual_seed(0)
    weights = work / "tiny.pt"
    YOLO("yolov8n.yaml").save(str(weights))
    world = make_world(WorldConfig(images=30, seed=7), work / "world", workers=1)
    rows = fault_rows(world, weights, work)
    write_images(work / "many", args.images)
    memory = {"ingest": {"images": args.images, **peak_memory("ingest", work / "many-ds", str(work / "many"))}}
    if not args.no_round:
        memory["round"] = {"images": args.images, **peak_memory("round", work / "many-ds", str(weights))}
    for name, m in memory.items():
        print(f"{name} of {m['images']:,} images: {m['seconds']:.1f} s, driver peak {m['driver_peak_mib']:.0f} MiB, "
              f"all processes peak {m['all_processes_peak_pss_mib']:.0f} MiB (PSS)")
    report("faults", rows, {"memory": memory})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
