"""What a zoo model's confidence floor does to its boxes: the model measured as its card is (the
round's annotation path and filters, on the zoo world's seed-gold and target gold), once at the
round's fixed floor (0.25) and once at the floor it chooses on the zoo's calibration sample
(``Trainer.calibrate``; 100 seed-domain images of another world sample, never gold).

    python bench/zoo_floor.py                          # zoo/florence2 -> bench/results/zoo_floor.json
    python bench/zoo_floor.py --zoo OTHER_ZOO --name yolo

Needs the zoo world (drawn into ``zoo-build/world`` when missing) and about 2 minutes a measurement
for Florence-2 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from engine.loop.training import measure_and_record  # noqa: E402
from engine.loop.training_set import gold_stores, world_training_set  # noqa: E402
from engine.loop.zoo import DEFAULT_ZOO, calibration_world, check, install, zoo_world  # noqa: E402
from filters.regions import RegionFilterConfig  # noqa: E402
from specialists.training.registry import TRAINERS  # noqa: E402

log = logging.getLogger("bench.zoo_floor")
METRICS = ("detection_f1", "detection_precision", "detection_recall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO)
    parser.add_argument("--name", default="florence2", help="The zoo model (one that calibrates: florence2).")
    parser.add_argument("--work", type=Path, default=Path("zoo-build"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    world = zoo_world(args.work)
    model = check(args.zoo, world.config, (args.name,))[args.name]
    trainer = TRAINERS[args.name]
    gold, seed_gold = gold_stores(world)
    calibration = world_training_set(calibration_world(args.work), ("seed",))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / args.name
        facts = install(model, folder)
        card_floor = facts.pop("conf", None)
        facts.pop("calibration", None)
        for how, sample in (("fixed", None), ("calibrated", calibration)):
            manifest = {**facts, "name": args.name, "key": f"zoo-floor-{how}"}
            measured = measure_and_record(trainer, folder, manifest, gold, "cpu", seed_gold, calibration=sample)
            found = measured.manifest.get("calibration") or {}
            for split in ("seed-gold", "gold"):
                row = {"floor": how, "value": measured.manifest.get("conf", RegionFilterConfig().min_score), "calibration_f1": found.get("f1"),
                       "split": split}
                for metric in METRICS:
                    m = measured.measured(split)[f"region-text/{metric}"]
                    row[metric] = m["value"]
                    if metric == "detection_f1":
                        row["f1_low"], row["f1_high"] = m["low"], m["high"]
                rows.append(row)
    report("zoo_floor", rows, {"zoo": str(args.zoo), "name": args.name, "card_floor": card_floor,
                               "card_commit": model.card.code_commit})


if __name__ == "__main__":
    main()
