"""Engine throughput: images per second of a round, on the engine's own actor pipeline and on Ray
Data, each in the ``fused`` and ``pools`` placements, against (a) a naive sequential loop over
the same images and specialists (one image at a time, each specialist in turn, like the peers'
auto-labelers) and (b) the floor: each specialist's pure model time at its preferred batch size
in one process using every core, summed. Per executor: seconds to the first shard written
(workers' start included), steady images/s after it, the CPU busy share (/proc/stat) and the
models' share of that busy time. All measured in one run, on this machine (Ray started once,
its start-up reported apart).

    python bench/engine.py [--images 48] [--executors "engine fused,ray-data fused"]

Goals (issue 14): steady >= 1.1x the naive loop and >= 1.0x the floor at 400 images, >= 0.9x
the naive loop at 48; models >= 85% of the busy time; the first shard within 15 s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from unittest import mock

import psutil
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import reaper, settings  # noqa: E402
from bench.common import report  # noqa: E402
from engine.dataset.ingest import IngestConfig, ingest  # noqa: E402
from bench.raydata_round import RayDataPipeline, RayDataPools  # noqa: E402
from engine.round import run as round_run  # noqa: E402
from engine.round.run import run_round  # noqa: E402
from engine.round.runtime import Pipeline, Runtime  # noqa: E402
from engine.round.config import RoundConfig, SpecialistSpec  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.round.annotate import apply_masks  # noqa: E402
from engine.round.workers import SpecialistWorker  # noqa: E402
from engine.world.config import WorldConfig  # noqa: E402
from engine.world.make import make_world  # noqa: E402
from filters.phrases import PhraseParser  # noqa: E402
from filters.pipeline import filter_annotations  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.sam import ARCHITECTURES, build_sam  # noqa: E402

log = logging.getLogger("bench.engine")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def specs(sam_path: Path) -> tuple[SpecialistSpec, ...]:
    return (
        SpecialistSpec("yolo", {"weights": "yolov8n.yaml", "imgsz": 320, "conf": 0.25, "batch_size": 16}, cpus=1.0),
        SpecialistSpec("rapidocr", {}, cpus=1.0),
        SpecialistSpec("sam", {"checkpoint": str(sam_path), "model_type": "tiny", "batch_size": 8}, cpus=1.0),
    )


def naive(images: list[tuple[str, str]], workers: dict[str, SpecialistWorker], parser: PhraseParser) -> float:
    """One image at a time through every specialist in turn, then the filters."""
    start = time.perf_counter()
    for image_id, uri in images:
        pixels = load_rgb(uri)
        batch = Batch([image_id], [pixels])
        regions = pa.concat_tables([workers["yolo"].specialist(batch)["regions"],
                                    workers["rapidocr"].specialist(batch)["regions"]])
        masks = workers["sam"].specialist(Batch([image_id], [pixels], regions=regions))["masks"]
        filter_annotations({"regions": apply_masks(regions, masks)}, {image_id: (pixels.shape[1], pixels.shape[0])},
                           parser, pixels={image_id: pixels})
    return time.perf_counter() - start


def floor(images: list[tuple[str, str]], workers: dict[str, SpecialistWorker]) -> float:
    """Pure model time: each specialist over all images at its batch size (decoding excluded)."""
    pixels = [load_rgb(uri) for _, uri in images]
    ids = [i for i, _ in images]
    total = 0.0
    prompts = None
    for key in ("yolo", "rapidocr", "sam"):
        specialist = workers[key].specialist
        start = time.perf_counter()
        outputs = []
        for s in range(0, len(ids), specialist.batch_size):
            outputs.append(specialist(Batch(ids[s : s + specialist.batch_size], pixels[s : s + specialist.batch_size],
                                            regions=prompts)))
        total += time.perf_counter() - start
        if key != "sam":
            prompts = pa.concat_tables([o["regions"] for o in outputs] + ([prompts] if prompts is not None else []))
    return total


EXECUTORS = {
    "engine fused": ("engine", "fused"),
    "engine pools": ("engine", "pools"),
    "ray-data fused": ("ray-data", "fused"),
    "ray-data pools": ("ray-data", "pools"),
}
"""What a round runs on: the engine's own actor pipeline or Ray Data, in each placement."""


def actor_busy(since: float, seconds: float) -> dict[str, dict]:
    """From ``ray.timeline()``: per actor class, its workers, the share of the round each spent
    in ``run`` (the rest is waiting for work), and seconds spent unpickling arguments and storing
    results (the hand-offs between processes)."""
    import ray

    classes: dict[str, str] = {}  # worker -> actor class
    busy, handoff, workers = Counter(), Counter(), defaultdict(set)
    events = [e for e in ray.timeline() if e.get("ph") == "X" and e.get("ts", 0) >= since * 1e6]
    for e in events:
        if str(e["cat"]).startswith("task::") and str(e["cat"]).endswith(".run"):
            name = e["cat"].removeprefix("task::").removesuffix(".run")
            classes[e["tid"]] = name
            busy[name] += e["dur"] / 1e6
            workers[name].add(e["tid"])
    for e in events:
        if e["cat"] in ("task:deserialize_arguments", "task:store_outputs") and e["tid"] in classes:
            handoff[classes[e["tid"]]] += e["dur"] / 1e6
    return {name: {"workers": len(workers[name]), "busy_share": round(busy[name] / (len(workers[name]) * seconds), 3),
                   "handoff_s": round(handoff[name], 2)} for name in sorted(busy)}


def process_cpu() -> dict[int, tuple[str, float]]:
    """Each process's title (``ray::RoundWorker`` and the like, or its command) and CPU seconds."""
    found = {}
    for process in psutil.process_iter(["cmdline", "cpu_times"]):
        times, cmdline = process.info["cpu_times"], process.info["cmdline"] or []
        if times is not None and cmdline:
            title = cmdline[0].split("/")[-1] if not cmdline[0].startswith("ray::") else cmdline[0].split(".")[0]
            found[process.pid] = (title.strip(), times.user + times.system)
    return found


def cpu_by_title(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two ``process_cpu`` readings, summed per title (over 0.2 s)."""
    spent: Counter = Counter()
    for pid, (title, seconds) in after.items():
        spent[title] += seconds - before.get(pid, (title, 0.0))[1]
    return {title: round(seconds, 1) for title, seconds in spent.most_common() if seconds > 0.2}


def timed_round(store: Store, config: RoundConfig, executor: str) -> dict:
    """One round on ``executor``, Ray already up: seconds to the first shard written (workers'
    start included), steady images/s after it, and over the round proper (from the moment its
    workers are up) the CPU busy share and the models' share of that busy time."""
    kind, placement = EXECUTORS[executor]
    config = replace(config, placement=placement)
    marks: list[tuple[float, int]] = []
    clock = time.perf_counter()
    record = lambda done, total: marks.append((time.perf_counter() - clock, done))  # noqa: E731
    base = {"fused": RayDataPipeline, "pools": RayDataPools}[placement] if kind == "ray-data" else Pipeline
    started: list[tuple[int, int]] = []

    class pipeline(base):  # notes the CPU counters when the round's clock starts (its workers are up)
        def run(self, shards):
            started.append((cpu_times(), process_cpu()))
            yield from super().run(shards)

    since = time.time()
    with mock.patch.object(round_run, "Pipeline", pipeline):
        summary = run_round(store, 1, config, progress=record)
    wall = time.perf_counter() - clock
    busy1, total1 = cpu_times()
    processes = cpu_by_title(started[0][1], process_cpu())
    written = [(t, n) for t, n in marks if n > 0]
    (first_t, first_n), (last_t, last_n) = written[0], written[-1]
    busy0, total0 = started[0][0]  # Ray Data starts its actors inside run(): its window includes them
    busy_s = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
    models = sum(v for k, v in summary.model_seconds.items() if k != "filters")
    return {"executor": executor, "images": summary.images,
            "round_images_per_s": round(summary.images / summary.seconds, 3),
            "with_start_images_per_s": round(summary.images / wall, 3),
            "steady_images_per_s": round((last_n - first_n) / (last_t - first_t), 3) if last_t > first_t else 0.0,
            "first_shard_s": round(first_t, 1), "wall_s": round(wall, 1),
            "cpu_busy": round((busy1 - busy0) / max(total1 - total0, 1), 3),
            "model_share_of_busy": round(models / busy_s, 3) if busy_s else 0.0,
            "kept_regions": summary.kept.get("regions", 0),
            "actors": actor_busy(since + wall - summary.seconds, summary.seconds) if kind == "engine" else {},
            "processes": processes}


@contextlib.contextmanager
def loopback_cluster(nodes: int) -> Iterator[str | None]:
    """``nodes`` Ray nodes on this machine sharing its cores (a head and workers, each its own
    raylet and object store, as on separate machines); yields the head's address. One node:
    None (the round starts its embedded Ray)."""
    if nodes <= 1:
        yield None
        return
    temp = tempfile.mkdtemp(prefix="fldray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    cpus = [f"--num-cpus={max(1, (os.cpu_count() or 1) // nodes)}", "--disable-usage-stats"]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mark = f"bench-cluster-{uuid.uuid4().hex}"  # every process of this cluster inherits it
    env[reaper.MARK] = mark
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false",
                        *cpus], check=True, env=env, capture_output=True, timeout=180)
        for _ in range(nodes - 1):
            subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *cpus], check=True, env=env,
                           capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        reaper.stop(reaper.marked(mark))  # only this cluster's processes, Ray's renamed agents included
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    parser_args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser_args.add_argument("--images", type=int, default=48)
    parser_args.add_argument("--shard-size", type=int, default=8)
    parser_args.add_argument("--nodes", type=int, default=1,
                             help="Ray nodes on this machine sharing its cores (2: the two-node loopback cluster)")
    parser_args.add_argument("--executors", default=",".join(EXECUTORS),
                             help=f"comma-separated, of: {', '.join(EXECUTORS)}")
    args = parser_args.parse_args()
    executors = [e.strip() for e in args.executors.split(",")]
    unknown = [e for e in executors if e not in EXECUTORS]
    if unknown:
        raise SystemExit(f"unknown executor(s) {unknown}; known: {', '.join(EXECUTORS)}")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="fld-bench-engine-") as tmp:
        world = make_world(WorldConfig(images=int(args.images / 0.5) + 1, seed=3), Path(tmp) / "world")
        store = Store(Path(tmp) / "ds", create=True)
        ingest(str(world.images("pool")), store, IngestConfig(split="pool"))
        rows = store.read("images").to_pylist()[: args.images]
        images = [(r["image_id"], r["uri"]) for r in rows]
        sam_path = Path(tmp) / "sam.pth"
        torch.save(build_sam(ARCHITECTURES["tiny"]).state_dict(), sam_path)
        config = RoundConfig(specialists=specs(sam_path), shard_size=args.shard_size, splits=("pool",))
        # the naive loop and the floor use every core in each model (library defaults)
        workers = {s.key: SpecialistWorker(s.key, s.name, dict(s.options), cpus=float(torch.get_num_threads()))
                   for s in config.specialists}
        naive_threads = torch.get_num_threads()
        parser = PhraseParser()
        naive(images[:2], workers, parser)  # warm-up
        naive_ips = len(images) / naive(images, workers, parser)
        floor_ips = len(images) / floor(images, workers)
        del workers
        listing = Path(tmp) / "images.txt"
        listing.write_text("\n".join(uri for _, uri in images))
        start = time.perf_counter()
        with loopback_cluster(args.nodes) as address, Runtime(address):
            ray_start = time.perf_counter() - start
            results = []
            for k, executor in enumerate(executors):
                only = Store(Path(tmp) / f"only-{k}", create=True)  # a dataset holding exactly these images
                ingest(str(listing), only, IngestConfig(split="pool"))
                results.append(timed_round(only, config, executor))
        actors = {row["executor"]: row.pop("actors") for row in results}
        processes = {row["executor"]: row.pop("processes") for row in results}
        for row in results:
            row["round_over_naive"] = round(row["round_images_per_s"] / naive_ips, 2)
            row["round_over_floor"] = round(row["round_images_per_s"] / floor_ips, 2)
            row["steady_over_naive"] = round(row["steady_images_per_s"] / naive_ips, 2)
            row["steady_over_floor"] = round(row["steady_images_per_s"] / floor_ips, 2)
            row["with_start_over_naive"] = round(row["with_start_images_per_s"] / naive_ips, 2)
    report(f"engine-{args.images}" + (f"-{args.nodes}-nodes" if args.nodes > 1 else ""), results,
           {"nodes": args.nodes, "actors_during_round": actors, "process_cpu_s_during_round": processes, "naive_images_per_s": round(naive_ips, 3), "floor_images_per_s": round(floor_ips, 3),
            "ray_start_s": round(ray_start, 1),
            "goals": {"round_over_naive": ">= 1.1 at 400 images, >= 0.9 at 48", "round_over_floor": ">= 1.0 at 400",
                      "model_share_of_busy": ">= 0.85", "first_shard_s": "<= 15"},
            "specialists": ["yolov8n (yaml, random weights) 320 px", "rapidocr", "SAM tiny (random)"],
            "naive_and_floor_threads": naive_threads})
    log.info("naive %.3f images/s, floor %.3f, Ray start %.1f s", naive_ips, floor_ips, ray_start)
    for executor, found in actors.items():
        log.info("%s, per actor class (timeline): %s", executor, found)
        log.info("%s, CPU seconds per process title during the round: %s", executor, processes[executor])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings.apply()
    main()
