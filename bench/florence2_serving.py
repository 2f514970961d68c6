"""Florence-2 serving: images per second of the zoo's Florence-2 running every task the round serves
(three descriptions, ``<OD>``, ``<OCR_WITH_REGION>``, grounding of the gold descriptions, region
captions of the gold objects) through ``Florence2Specialist.predict``, the one annotate path, on
gold images of a small world. Also writes a fingerprint of every generated row, so that a speed
change that must not change the output can be checked for it (same fingerprint before and after).

    python bench/florence2_serving.py [--images 32] [--batch 8] [--checkpoint zoo/florence2/checkpoint]
"""

from __future__ import annotations

import argparse
import hashlib
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
from specialists.florence2 import TASKS  # noqa: E402
from specialists.registry import build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVED = tuple(t for t in TASKS if t not in ("<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>"))


def fingerprint(tables: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tables):
        table = tables[name]
        keep = [c for c in table.column_names if c not in ("created_at", "version")]
        digest.update(repr(table.select(keep).to_pylist()).encode())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--checkpoint", default=str(ROOT / "zoo" / "florence2" / "checkpoint"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fld-bench-florence2-") as tmp:
        world = make_world(WorldConfig(images=max(args.images * 4, 40), seed=5), Path(tmp) / "world")
        gold = Store(world.gold)
        images = gold.read("images").to_pylist()[: args.images]
        regions, texts = gold.read("regions"), gold.read("texts")
        specialist = build("florence2", checkpoint=args.checkpoint, tasks=SERVED, batch_size=args.batch)
        specialist.load()
        ids, pixels = [r["image_id"] for r in images], [load_rgb(r["uri"]) for r in images]
        objects = regions.filter(regions.column("kind").to_numpy(zero_copy_only=False) == "object")
        specialist(Batch(ids[:1], pixels[:1], objects, texts))  # warm-up
        digests, start = [], time.perf_counter()
        for i in range(0, len(ids), args.batch):
            out = specialist(Batch(ids[i : i + args.batch], pixels[i : i + args.batch], objects, texts))
            digests.append(fingerprint(out))
        seconds = time.perf_counter() - start
    rows = [{"images": len(ids), "batch": args.batch, "tasks": len(SERVED), "seconds": round(seconds, 1),
             "images_per_s": round(len(ids) / seconds, 3),
             "output": hashlib.sha256("".join(digests).encode()).hexdigest()[:16]}]
    report("florence2_serving", rows, {"checkpoint": args.checkpoint, "tasks": list(SERVED),
                                       "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    settings.apply()
    main()
