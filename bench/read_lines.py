"""Can the zoo's Florence-2 learn to read text lines? Fine-tunes the published model with the
recipe's ``read_lines`` (``<OCR>`` on the tight crop of each text region, beside its other tasks, as
the zoo's last stage trains them) on the zoo world's seed split, and every ``--eval-every`` steps
reads the tight crops of the gold text regions, seed-gold and target gold: the share read right
(the world writes one of 20 words: chance is about 1 in 20) and the words said most.

    python bench/read_lines.py --steps 300 --eval-every 100        # bench/results/read_lines.json
    python bench/read_lines.py --steps 300 --corrupt               # jittered views through a worse camera

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
from specialists.florence2 import READ, Florence2Config, Florence2Specialist, line_crop, load_florence2  # noqa: E402
from specialists.florence2_parse import parse_florence2  # noqa: E402

log = logging.getLogger("bench.read_lines")
RECIPE = {"flip_od": True, **LEARNT, "crop_od": 4, "task_weights": {"<OD>": 6.0, "<REGION_TO_DESCRIPTION>": 4.0}}
"""The zoo's last stage (engine.loop.profiles, ``zoo``), to which ``read_lines`` is added."""


def gold_lines(store: Store, margin: float) -> list[tuple[np.ndarray, str]]:
    """(tight crop, text) of each text region of a gold split."""
    uris = {r["image_id"]: r["uri"] for r in store.read("images").to_pylist()}
    images: dict[str, np.ndarray] = {}
    out = []
    for r in store.read("regions").to_pylist():
        if r["kind"] == "ocr" and r["label"]:
            image = images.setdefault(r["image_id"], load_rgb(uris[r["image_id"]]))
            out.append((line_crop(image, r["box"], margin), r["label"].strip()))
    return out


def read(reader: Florence2Specialist, crops: list[np.ndarray]) -> list[str]:
    """What the model reads on each crop, parsed as the reader serving parses it ("" for nothing)."""
    items = [parse_florence2(g, READ, (c.shape[1], c.shape[0])) for g, c in zip(reader.generate(crops, [READ] * len(crops)), crops)]
    return [found[0].text if found else "" for found in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--margin", type=float, default=0.3, help="the crop's margin, a share of the line's height")
    parser.add_argument("--views", type=int, default=4, help="jittered windows per line")
    parser.add_argument("--read-weight", type=float, default=8.0, help="the sampling weight of <OCR> examples")
    parser.add_argument("--corrupt", action="store_true",
                        help="each jittered view through a seeded photometric corruption (the recipe's corrupt_views)")
    parser.add_argument("--token-mean", action="store_true",
                        help="the decoder's loss over all target tokens (transformers' own), not per example")
    parser.add_argument("--dense", type=float, nargs=2, default=None, metavar=("AUX", "ATTENTION"),
                        help="the recipe's aux_weight and attention_weight (default: the trainer's)")
    add_arguments(parser, eval_every=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    world = zoo_world(args.work)
    sets = {"seed-gold": gold_lines(Store(world.seed_gold), args.margin), "gold": gold_lines(Store(world.gold), args.margin)}
    recipe = {**RECIPE, "read_lines": args.margin, "ocr_views": args.views,
              "task_weights": {**RECIPE["task_weights"], READ: args.read_weight}, "example_mean": not args.token_mean,
              **({"corrupt_views": True} if args.corrupt else {}),
              **({"aux_weight": args.dense[0], "attention_weight": args.dense[1]} if args.dense else {})}
    model, processor = load_florence2(published(args))
    reader = Florence2Specialist(Florence2Config(published(args), tasks=("<OD>",), max_new_tokens=16, batch_size=32))
    reader.model, reader.processor = model, processor
    rows = []

    def evaluate(model, step: int, minutes: float) -> dict:
        row = {"step": step, "minutes": round(minutes, 1)}
        for name, lines in sets.items():
            said = read(reader, [c for c, _ in lines])
            row[f"{name} read right"] = round(sum(s == w for s, (_, w) in zip(said, lines)) / len(lines), 3)
            row[f"{name} most said"] = ", ".join(f"{w or '(nothing)'} {n}" for w, n in Counter(said).most_common(3))
        rows.append(row)
        log.info("%s", row)
        return {}

    evaluate(model.eval(), 0, 0.0)
    config, result = fine_tune(args, model, processor, recipe, args.steps, "read-lines", evaluate)
    report("read_lines", rows, {"config": config.to_dict(), "lines": {k: len(v) for k, v in sets.items()},
                                "task_counts": result.tasks, "train_seconds": round(result.seconds, 1)})


if __name__ == "__main__":
    main()
