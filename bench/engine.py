"""Engine throughput: images per second of a round through Ray against (a) a naive sequential
loop over the same images and specialists (one image at a time, each specialist in turn, like
the peers' auto-labelers) and (b) the floor: each specialist's pure model time at its preferred
batch size in one process using every core, summed. Also the CPU utilisation while the round
runs (from /proc/stat). All measured in one run, on this machine.

    python bench/engine.py [--images 48]

Goals (issue 6): >= 1.5x the naive loop, within 15% of the floor, both cores >= 90% busy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import settings  # noqa: E402
from bench.common import report  # noqa: E402
from engine.dataset.ingest import IngestConfig, ingest  # noqa: E402
from engine.round.run import run_round  # noqa: E402
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


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


THREADS = 1
"""onnxruntime threads of the OCR actor: one, like the torch actors beside it."""


def specs(sam_path: Path) -> tuple[SpecialistSpec, ...]:
    return (
        SpecialistSpec("yolo", {"weights": "yolov8n.yaml", "imgsz": 320, "conf": 0.25, "batch_size": 16}, cpus=1.0),
        SpecialistSpec("rapidocr", {"threads": THREADS}, cpus=1.0),
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


def main() -> None:
    parser_args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser_args.add_argument("--images", type=int, default=48)
    parser_args.add_argument("--shard-size", type=int, default=8)
    args = parser_args.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="fld-bench-engine-") as tmp:
        world = make_world(WorldConfig(images=int(args.images / 0.5) + 1, seed=3), Path(tmp) / "world")
        store = Store(Path(tmp) / "ds", create=True)
        ingest(str(world.images("pool")), store, IngestConfig(split="pool"))
        rows = store.read("images").to_pylist()[: args.images]
        images = [(r["image_id"], r["uri"]) for r in rows]
        sam_path = Path(tmp) / "sam.pth"
        torch.save(build_sam(ARCHITECTURES["tiny"]).state_dict(), sam_path)
        config = RoundConfig(specialists=specs(sam_path), shard_size=args.shard_size, splits=("pool",), max_in_flight=6)
        # the naive loop and the floor use every core in each model (library defaults)
        workers = {s.key: SpecialistWorker(s.key, s.name, {k: v for k, v in s.options.items() if k != "threads"},
                                           cpus=float(torch.get_num_threads())) for s in config.specialists}
        parser = PhraseParser()
        naive(images[:2], workers, parser)  # warm-up
        naive_s = naive(images, workers, parser)
        floor_s = floor(images, workers)
        del workers
        # the round on exactly these images: a dataset holding only them
        only = Store(Path(tmp) / "only", create=True)
        listing = Path(tmp) / "images.txt"
        listing.write_text("\n".join(uri for _, uri in images))
        ingest(str(listing), only, IngestConfig(split="pool"))
        busy0, total0 = cpu_times()
        start = time.perf_counter()
        summary = run_round(only, 1, config)
        wall = time.perf_counter() - start
        busy1, total1 = cpu_times()
        n = len(images)
        engine_ips = n / summary.seconds
        result = [{
            "images": n,
            "naive_images_per_s": round(n / naive_s, 3),
            "floor_images_per_s": round(n / floor_s, 3),
            "engine_images_per_s": round(engine_ips, 3),
            "engine_with_startup_images_per_s": round(n / wall, 3),
            "engine_over_naive": round(engine_ips / (n / naive_s), 2),
            "engine_over_floor": round(engine_ips / (n / floor_s), 2),
            "cpu_busy_during_round": round((busy1 - busy0) / max(total1 - total0, 1), 3),
        }]
    report("engine", result, {"goals": {"engine_over_naive": ">= 1.5", "engine_over_floor": ">= 0.85",
                                        "cpu_busy_during_round": ">= 0.90"},
                              "specialists": ["yolov8n (yaml, random weights) 320 px", "rapidocr", "SAM tiny (random)"],
                              "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    settings.apply()
    main()
