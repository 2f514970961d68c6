"""Fine-tune a Florence-2 checkpoint on region descriptions on crops (the recipe's ``crop_regions``)
from a world's seed-split truth, and save it: the region captioner that
``bench/region_captions_on_crops.py --modes cropM`` then measures (docs/FLORENCE2_RECIPE.md).

    python bench/region_crops_finetune.py --world zoo-build/world --checkpoint zoo/florence2/checkpoint \
        --out /tmp/crops112 --steps 500 --margin 0.2 --size 112

``--size``: the side the crops are fed at (the recipe's ``region_size``; the other tasks keep the
checkpoint's size). The checkpoint is served on crops as a round serves it:
``region_captions_on_crops.py --modes crop0.2@112``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.evaluation.gold import GoldGuard  # noqa: E402
from engine.loop.training_set import load_training_set  # noqa: E402
from specialists.florence2 import REGION_TO_DESCRIPTION, load_florence2  # noqa: E402
from specialists.florence2_build import save_checkpoint  # noqa: E402
from specialists.training.florence2 import ALL  # noqa: E402
from specialists.training.florence2_examples import build_examples  # noqa: E402
from specialists.training.florence2_train import Florence2TrainConfig, train_florence2  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="A world folder (its truth's seed split is trained on).")
    parser.add_argument("--checkpoint", default="zoo/florence2/checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--size", type=int, default=None, help="Side the crops are fed at (default: the checkpoint's).")
    parser.add_argument("--all-tasks", action="store_true",
                        help="Train every Florence-2 task beside the crops (as a zoo rebuild would), not region captions alone.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    guard = GoldGuard.from_stores(*(Store(args.world / s) for s in ("gold", "seed-gold") if (args.world / s).is_dir()))
    data = load_training_set(Store(args.world / "truth"), 0, ("seed",), guard)
    examples = build_examples(data.tables["texts"], data.tables["regions"], data.tables["triplets"], data.sizes,
                              ALL if args.all_tasks else (REGION_TO_DESCRIPTION,))
    if not examples:
        raise SystemExit(f"{args.world}: its seed split holds no region captions to train on")
    images = {i: data.pixels(i) for i in {e.image_id for e in examples}}
    model, processor = load_florence2(args.checkpoint)
    config = Florence2TrainConfig(steps=args.steps, batch_size=args.batch, lr=3e-4, crop_regions=args.margin,
                                  region_size=args.size, save_every=max(25, args.steps // 8),
                                  task_weights={"<OD>": 3.0, REGION_TO_DESCRIPTION: 3.0})
    start = time.perf_counter()
    result = train_florence2(model, processor, examples, images, args.out / "state", config)
    save_checkpoint(model, processor, args.out / "checkpoint")
    report("region_crops_finetune", [{"examples": len(examples), "images": len(images), "steps": result.steps,
                                      "seconds": round(time.perf_counter() - start, 1),
                                      "size": args.size or processor.image_processor.size["height"]}],
           {"world": str(args.world), "from": args.checkpoint, "out": str(args.out / "checkpoint"), "margin": args.margin})


if __name__ == "__main__":
    main()
