"""Specialist throughput: images per second at batch 1 and at each specialist's preferred batch,
on real-size architectures with random weights where real weights are absent here (yolov8n from
its yaml, Florence-2-base's configuration with the released vocabulary size, SAM vit_b), so the
compute is the real one; world images, their truth boxes as prompts.

    python bench/specialists.py [--only yolo,sam,...] [--images 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import settings  # noqa: E402
from bench.common import report  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.world.config import WorldConfig  # noqa: E402
from engine.world.make import make_world  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.registry import build  # noqa: E402


def florence2_base(folder: Path, texts: list[str]) -> str:
    from specialists.florence2_build import build_model, build_processor, save_checkpoint, train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=4000)
    processor = build_processor(tokenizer, image_size=768)
    return str(save_checkpoint(build_model("base", tokenizer, vocab_size=51289), processor, folder))


def throughput(specialist, batch: Batch, batch_size: int) -> float:
    specialist.batch_size = batch_size
    specialist(Batch(batch.image_ids[:1], batch.images[:1], batch.regions, batch.texts))  # warm-up
    start = time.perf_counter()
    for i in range(0, len(batch), batch_size):
        ids = batch.image_ids[i : i + batch_size]
        specialist(Batch(ids, batch.images[i : i + batch_size], batch.regions, batch.texts))
    return len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="yolo,rapidocr,grabcut,label-grounder,sam,florence2")
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fld-bench-specialists-") as tmp:
        world = make_world(WorldConfig(images=max(args.images * 5, 10), seed=5), Path(tmp) / "world")
        gold = Store(world.gold)
        images = gold.read("images").to_pylist()[: args.images]
        batch = Batch([r["image_id"] for r in images], [load_rgb(r["uri"]) for r in images],
                      regions=gold.read("regions"), texts=gold.read("texts"))
        plans = {
            "yolo": (lambda: build("yolo", weights="yolov8n.yaml", imgsz=640, conf=0.25), 16, "yolov8n (yaml), 640 px"),
            "rapidocr": (lambda: build("rapidocr"), 8, "PP-OCRv4 (shipped); no batch API: one image per call"),
            "grabcut": (lambda: build("grabcut"), 8, "OpenCV, per box"),
            "label-grounder": (lambda: build("label-grounder"), 64, "spaCy en_core_web_sm"),
            "sam": (lambda: build("sam", model_type="vit_b"), 4, "SAM vit_b, random weights, 1024 px"),
            "florence2": (lambda: build("florence2", checkpoint=florence2_base(Path(tmp) / "f2", batch.texts.column("text").to_pylist()),
                                        tasks=("<CAPTION>",), max_new_tokens=20, min_new_tokens=20),
                          8, "Florence-2-base config, random weights, 768 px, 20 new tokens"),
        }
        for name in args.only.split(","):
            make, preferred, what = plans[name]
            specialist = make()
            specialist.load()
            one = throughput(specialist, batch, 1)
            best = throughput(specialist, batch, preferred)
            rows.append({"specialist": name, "model": what, "images_per_s_batch_1": round(one, 2),
                         "preferred_batch": preferred, "images_per_s_preferred": round(best, 2),
                         "speed_up": round(best / one, 2)})
            print(rows[-1], flush=True)
    report("specialists", rows, {"images": args.images, "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    settings.apply()
    main()
