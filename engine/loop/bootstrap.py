"""``fld bootstrap``: train every registered specialist (``specialists.training.registry``) from a
world's seed split, offline, into ``<models>/round-0/<name>/`` (for the embedded default: YOLO
from yolov8n.yaml, a small box-prompted SAM, GrabCut measured only, a small Florence-2 with a
tokenizer built here). Each manifest holds the model's gold metrics; a rerun with unchanged
inputs reuses the models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.dataset.store import Store
from engine.evaluation.gold import GoldGuard
from engine.loop.profiles import Profile, budget_for
from engine.loop.training import Trained, train_and_measure
from engine.loop.training_set import load_training_set
from engine.world.make import World
from specialists.training.registry import TRAINERS

log = logging.getLogger(__name__)


@dataclass
class ModelSet:
    """The trained specialists of one round (round 0: bootstrapped)."""

    round: int
    models: dict[str, Trained]

    def gold_table(self) -> list[dict]:
        return [{"specialist": name, "metric": metric, "value": value}
                for name, trained in self.models.items() for metric, value in trained.gold.items()]


def models_dir(root: str | Path, round_id: int) -> Path:
    return Path(root) / f"round-{round_id}"


def bootstrap(world: World, models_root: str | Path, profile: Profile, only: tuple[str, ...] | None = None,
              step: Callable[[str], None] | None = None) -> ModelSet:
    """Train ``only`` of the registered specialists (default: all) on the world's seed truth and
    measure each on its gold."""
    only = tuple(TRAINERS) if only is None else only
    unknown = [n for n in only if n not in TRAINERS]
    if unknown:
        raise ValueError(f"unknown specialist(s) to bootstrap: {unknown}; known: {', '.join(TRAINERS)}")
    truth, gold = Store(world.truth), Store(world.gold)
    seed = load_training_set(truth, 0, ("seed",), GoldGuard.from_stores(gold))
    if not len(seed):
        raise ValueError(f"the world in {world.root} has no seed images to train on")
    root = models_dir(models_root, 0)
    models: dict[str, Trained] = {}
    for name in only:
        if step:
            step(f"bootstrap {name}")
        trainer = TRAINERS[name]
        models[name] = train_and_measure(trainer, seed, root, budget_for(profile.bootstrap, trainer), gold,
                                         device=profile.device)
        log.info("bootstrapped %s: %s", name, models[name].gold)
    return ModelSet(0, models)
