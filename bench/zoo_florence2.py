"""What the Florence-2 benchmarks share: fine-tune the published zoo Florence-2 with a recipe on the
zoo world's seed split, measuring it along the way (``bench/od_on_crops.py``,
``bench/ocr_on_crops.py``), and serve a model on a gold split's images, unfiltered
(``bench/florence2_gold_tasks.py`` too)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable

import pyarrow as pa

from engine.dataset.sources import load_rgb
from engine.dataset.store import Store
from engine.loop.training_set import world_training_set
from engine.loop.zoo import DEFAULT_ZOO, zoo_world
from specialists.base import Batch, Specialist
from specialists.training.florence2 import Florence2Budget, Florence2Trainer
from specialists.training.florence2_train import train_florence2

LEARNT = {"crop_regions": 0.2, "region_size": 112}
"""How the published model reads region crops (its card's stage 2): carried into the fine-tuning."""


def add_arguments(parser: argparse.ArgumentParser, eval_every: int) -> None:
    """The options every recipe benchmark takes."""
    parser.add_argument("--lr", type=float, default=None, help="default: the trainer's fine-tuning rate")
    parser.add_argument("--eval-every", type=int, default=eval_every)
    parser.add_argument("--work", type=Path, default=Path("zoo-build"))
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO)


def published(args: argparse.Namespace) -> str:
    """The published zoo Florence-2's checkpoint folder."""
    return str(args.zoo / "florence2" / "checkpoint")


def fine_tune(args: argparse.Namespace, model, processor, recipe: dict, steps: int, folder: str,
              evaluate: Callable[[object, int, float], dict]):
    """Train ``model`` (the published one, loaded) in place with ``recipe`` for ``steps`` of 16 on the
    zoo world's seed split, calling ``evaluate`` every ``--eval-every`` steps; (its config, the
    training's result). Checkpoints go to ``WORK/folder/state`` (an interrupted run resumes)."""
    trainer = Florence2Trainer()
    budget = Florence2Budget(steps=steps, batch=16, size="small", recipe=recipe)
    data = world_training_set(zoo_world(args.work), ("seed",))
    examples = trainer._examples(data, budget)
    config = trainer._config(budget, {"weights": published(args), "config": LEARNT}, "cpu")
    config = dataclasses.replace(config, lr=args.lr) if args.lr else config
    images = {i: data.pixels(i) for i in {e.image_id for e in examples}}
    result = train_florence2(model, processor, examples, images, args.work / folder / "state", config,
                             evaluate=evaluate, eval_every=args.eval_every)
    return config, result


def gold_batches(gold: Store, size: int) -> list[Batch]:
    """The gold split's images, read once, in batches of ``size``."""
    images = gold.read("images").to_pylist()
    if not images:
        raise SystemExit(f"{gold.root} holds no images")
    return [Batch([r["image_id"] for r in chunk], [load_rgb(r["uri"]) for r in chunk])
            for chunk in (images[k:k + size] for k in range(0, len(images), size))]


def serve(specialist: Specialist, batches: list[Batch]) -> dict[str, pa.Table]:
    """Each table the (loaded) specialist produces on the batches, unfiltered."""
    made: dict[str, list[pa.Table]] = {t: [] for t in specialist.produces}
    for batch in batches:
        out = specialist(batch)
        for table in made:
            made[table].append(out[table])
    return {t: pa.concat_tables(v) for t, v in made.items()}
