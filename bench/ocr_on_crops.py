"""Can the zoo's Florence-2 learn to read on crops? Fine-tunes the published model with the
recipe's ``crop_ocr`` (``<OCR_WITH_REGION>`` on the square crops of the seed images' object boxes,
beside its other tasks) on the zoo world's seed split, and every ``--eval-every`` steps reads the
crops of the gold sign boxes (seed-gold and target gold) and of 150 boxes without text: the share
of signs read right (chance: 1 in 20 words), and of the others given a text.

    python bench/ocr_on_crops.py --steps 600 --views 4 --size 112      # bench/results/ocr_on_crops.json

Needs the zoo world (``fld zoo build`` draws it into ``zoo-build/world``; this draws it when missing).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import report  # noqa: E402
from bench.zoo_florence2 import LEARNT, add_arguments, fine_tune, published  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.loop.zoo import zoo_world  # noqa: E402
from specialists.florence2 import OCR, Florence2Config, Florence2Specialist, load_florence2, region_crop, resized  # noqa: E402
from specialists.florence2_parse import parse_florence2  # noqa: E402

log = logging.getLogger("bench.ocr_on_crops")
MARGIN = LEARNT["crop_regions"]
NEGATIVES = 150


def gold_crops(store: Store) -> tuple[list[tuple[np.ndarray, str]], list[np.ndarray]]:
    """(crops of the gold sign boxes with their word, crops of the first boxes without text)."""
    uris = {r["image_id"]: r["uri"] for r in store.read("images").to_pylist()}
    by_image: dict[str, list[dict]] = {}
    for r in store.read("regions").to_pylist():
        by_image.setdefault(r["image_id"], []).append(r)
    signs, others = [], []
    for image_id, rows in sorted(by_image.items()):
        words = [r["label"] for r in rows if r["kind"] == "ocr"]
        image = load_rgb(uris[image_id])
        for r in rows:
            if r["kind"] == "object":
                crop, _ = region_crop(image, r["box"], MARGIN)
                if r["label"] == "sign" and words:
                    signs.append((crop, words[0]))
                elif len(others) < NEGATIVES:
                    others.append(crop)
    return signs, others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--views", type=int, default=4, help="jittered windows per crop that holds text")
    parser.add_argument("--size", type=int, default=112, help="the side the crops are fed at")
    parser.add_argument("--ocr-weight", type=float, default=8.0)
    add_arguments(parser, eval_every=150)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    world = zoo_world(args.work)
    sets = {"seed-gold": gold_crops(Store(world.seed_gold)), "gold": gold_crops(Store(world.gold))}
    recipe = {"flip_od": True, **LEARNT, "region_size": args.size, "crop_ocr": True, "ocr_views": args.views,
              "task_weights": {"<OD>": 3.0, "<REGION_TO_DESCRIPTION>": 4.0, OCR: args.ocr_weight}}
    model, processor = load_florence2(published(args))
    reader = Florence2Specialist(Florence2Config(published(args), tasks=(OCR,), max_new_tokens=32, batch_size=32))
    reader.model, reader.processor = model, processor
    feed = resized(processor, args.size) if args.size != processor.image_processor.size["height"] else processor
    rows = []

    def evaluate(model, step: int, minutes: float) -> dict:
        row = {"step": step, "minutes": round(minutes, 1)}
        for name, (signs, others) in sets.items():
            crops = [c for c, _ in signs] + others
            said = [" ".join(i.text for i in parse_florence2(g, OCR, (c.shape[1], c.shape[0]))).strip()
                    for g, c in zip(reader.generate(crops, [OCR] * len(crops), processor=feed), crops)]
            read = said[:len(signs)]
            row[f"{name} signs read right"] = round(sum(s == w for s, (_, w) in zip(read, signs)) / len(signs), 3)
            row[f"{name} text on no-text boxes"] = round(sum(bool(s) for s in said[len(signs):]) / max(1, len(others)), 3)
            row[f"{name} most said on signs"] = ", ".join(f"{w or '(nothing)'} {n}" for w, n in Counter(read).most_common(3))
        rows.append(row)
        log.info("%s", row)
        return {}

    evaluate(model.eval(), 0, 0.0)
    config, result = fine_tune(args, model, processor, recipe, args.steps, "ocr-on-crops", evaluate)
    report("ocr_on_crops", rows, {"config": config.to_dict(), "signs": {k: len(v[0]) for k, v in sets.items()},
                                  "task_counts": result.tasks, "train_seconds": round(result.seconds, 1)})


if __name__ == "__main__":
    main()
