"""Florence-2 training speed: the zoo profile's Florence-2 trained for a few steps through the
trainer's own path (tokenizer, processor, model, recipe) on the zoo world's seed split, on a CPU
or a GPU, and the steps that would fit a wall-clock budget.

    python bench/florence2_speed.py --device cuda --steps 40 --minutes 6.5   # on a lent GPU
    python bench/florence2_speed.py --steps 3                                 # here, on the CPU

Writes ``bench/results/florence2-speed-<device>.json`` (and ``--out`` when given): seconds a step,
examples a second and ``fits``, the steps the budget holds at that speed (rounded down to 100;
the speed of the first steps, CUDA's warm-up included, so a conservative count). The zoo world
must exist (``fld zoo build`` makes it under ``--work``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("zoo-build"), help="Where the zoo world is (world/).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=40, help="Steps to time.")
    parser.add_argument("--minutes", type=float, default=6.5, help="The budget that `fits` counts steps for.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from engine.dataset.store import Store
    from engine.evaluation.gold import GoldGuard
    from engine.loop.profiles import budget_for, profile
    from engine.loop.training_set import load_training_set
    from engine.world.make import World
    from specialists.training.registry import trainer_for

    world = World.open(args.work / "world")
    guard = GoldGuard.from_stores(*(Store(p) for p in (world.gold, world.seed_gold) if p))
    data = load_training_set(Store(world.truth), 0, ("seed",), guard)
    trainer = trainer_for("florence2")
    budget = replace(budget_for(profile("zoo").bootstrap, trainer), steps=args.steps)
    with tempfile.TemporaryDirectory() as folder:
        facts = trainer.train(data, Path(folder), budget, None, args.device)
    per_step = facts["train_seconds"] / max(facts["steps"], 1)
    row = {"device": args.device, "size": budget.size, "batch": budget.batch, "steps": facts["steps"],
           "seconds_per_step": per_step, "examples_per_second": facts["examples_per_second"],
           "fits": int(args.minutes * 60 / per_step) // 100 * 100, "minutes": args.minutes}
    path = report(f"florence2-speed-{args.device}", [row], {"examples": facts["examples"]})
    if args.out:
        args.out.write_text(path.read_text())


if __name__ == "__main__":
    main()
