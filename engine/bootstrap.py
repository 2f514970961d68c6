"""``fld bootstrap``: train the embedded default's specialists from a world's seed split, offline.

    <models>/round-0/yolo/        ultralytics detector from yolov8n.yaml      manifest.json
    <models>/round-0/sam/         a small box-prompted SAM                    manifest.json
    <models>/round-0/grabcut/     (no weights: measured on gold only)         manifest.json
    <models>/round-0/florence2/   a small Florence-2 (tokenizer built here)   manifest.json

Each manifest holds the model's gold metrics; a rerun with unchanged inputs reuses the models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.gold import GoldGuard
from engine.profiles import Profile
from engine.specialist_training import (
    Trained, gold_images, measure_grabcut, train_captioner, train_detector, train_segmenter,
)
from engine.store import Store
from engine.training_set import load_training_set
from engine.world.make import World

log = logging.getLogger(__name__)
SPECIALISTS = ("yolo", "sam", "grabcut", "florence2")
"""grabcut is not trained, only measured on gold: the segmenter gate chooses between it and SAM."""


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


def bootstrap(world: World, models_root: str | Path, profile: Profile, only: tuple[str, ...] = SPECIALISTS,
              pretrained_florence2: str | None = None,
              step: Callable[[str], None] | None = None) -> ModelSet:
    """Train ``only`` of the specialists on the world's seed truth and measure them on its gold."""
    unknown = [n for n in only if n not in SPECIALISTS]
    if unknown:
        raise ValueError(f"unknown specialist(s) to bootstrap: {unknown}; known: {', '.join(SPECIALISTS)}")
    truth, gold = Store(world.truth), Store(world.gold)
    guard = GoldGuard.from_stores(gold)
    seed = load_training_set(truth, 0, ("seed",), guard)
    if not len(seed):
        raise ValueError(f"the world in {world.root} has no seed images to train on")
    gold_uris = gold_images(gold)
    root = models_dir(models_root, 0)
    budget, device = profile.bootstrap, profile.device
    models: dict[str, Trained] = {}
    for name in only:
        if step:
            step(f"bootstrap {name}")
        if name == "yolo":
            models[name] = train_detector(seed, root, budget, gold_uris, gold, device=device)
        elif name == "sam":
            models[name] = train_segmenter(seed, root, budget, gold_uris, gold, device=device)
        elif name == "grabcut":
            models[name] = measure_grabcut(root, gold_uris, gold)
        else:
            models[name] = train_captioner(seed, root, budget, gold_uris, gold, pretrained=pretrained_florence2,
                                           device=device)
        log.info("bootstrapped %s: %s", name, models[name].gold)
    return ModelSet(0, models)
