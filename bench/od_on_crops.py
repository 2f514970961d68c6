"""Does the recipe's ``crop_od`` lift the zoo Florence-2's ``<OD>``? Fine-tunes the published model on
the zoo world's seed split, every task beside ``<OD>`` examples that are also mirrored (``flip_od``)
and, with ``--crop-od K``, cropped K ways, and every ``--eval-every`` steps scores its ``<OD>`` on
seed-gold and target gold through ``Florence2Specialist`` and the round's evaluator (95% intervals
over images). ``--crop-od 0`` is the control: the same steps without the crops.

    python bench/od_on_crops.py --crop-od 2 --steps 600      # bench/results/od_on_crops.json

Needs the zoo world (``fld zoo build`` draws it into ``zoo-build/world``; this draws it when missing).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from bench.zoo_florence2 import add_arguments, fine_tune, gold_batches, published, serve  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.evaluation.evaluate import Evaluator  # noqa: E402
from engine.evaluation.noise import change_interval, interval  # noqa: E402
from engine.loop.zoo import zoo_world  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.florence2 import Florence2Config, Florence2Specialist  # noqa: E402

log = logging.getLogger("bench.od_on_crops")
OD = "<OD>"


def od_f1(detector: Florence2Specialist, gold: Store, batches: list[Batch]):
    """The detector's ``<OD>`` detection F1 on the gold store's images (``batches``): its measurement
    (value and per-image units)."""
    for m in Evaluator(gold).evaluate(serve(detector, batches)):
        if m.metric.endswith("detection_f1") and m.value is not None:
            return m
    raise RuntimeError(f"no detection F1 measured on {gold.root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop-od", type=int, default=2, help="cropped copies of each <OD> example (0: none)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--od-weight", type=float, default=6.0)
    add_arguments(parser, eval_every=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    world = zoo_world(args.work)
    golds = {name: (store, gold_batches(store, 16))
             for name, store in (("seed-gold", Store(world.seed_gold)), ("gold", Store(world.gold)))}
    recipe = {"flip_od": True, "task_weights": {OD: args.od_weight, "<REGION_TO_DESCRIPTION>": 4.0}}
    if args.crop_od:
        recipe["crop_od"] = args.crop_od
    detector = Florence2Specialist(Florence2Config(published(args), tasks=(OD,), max_new_tokens=256, batch_size=16))
    detector.load()  # trained in place below: the detector serves each step's weights
    rows, first = [], {}

    def evaluate(model, step: int, minutes: float) -> dict:
        row = {"crop_od": args.crop_od, "step": step, "minutes": round(minutes, 1)}
        for name, (gold, batches) in golds.items():
            m = od_f1(detector, gold, batches)
            low_high = interval(m.units)
            change = change_interval(first[name], m.units) if name in first else None
            first.setdefault(name, m.units)
            row[f"{name} <OD> F1"] = round(m.value, 3)
            row[f"{name} 95%"] = f"[{low_high.low:.3f}, {low_high.high:.3f}]"
            row[f"{name} change from step 0"] = f"[{change.low:+.3f}, {change.high:+.3f}]" if change else "-"
        rows.append(row)
        log.info("%s", row)
        return {}

    evaluate(detector.model.eval(), 0, 0.0)
    config, result = fine_tune(args, detector.model, detector.processor, recipe, args.steps,
                               f"od-on-crops-{args.crop_od}", evaluate)
    report(f"od_on_crops_{args.crop_od}", rows, {"config": config.to_dict(), "task_counts": result.tasks,
                                                 "train_seconds": round(result.seconds, 1)})


if __name__ == "__main__":
    main()
