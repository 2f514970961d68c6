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

import pyarrow as pa

from engine.dataset.store import Store
from engine.loop.gates import GateConfig, rival_bars
from engine.loop.profiles import Profile, budget_for
from engine.loop.training import Trained, train_and_measure, train_model
from engine.loop.training_set import gold_stores, world_training_set
from engine.world.make import World
from schemas import schema_for
from specialists.training.registry import TRAINERS
from specialists.training.trainer import TrainingSet

log = logging.getLogger(__name__)


@dataclass
class ModelSet:
    """The trained specialists of one round (round 0: bootstrapped)."""

    round: int
    models: dict[str, Trained]

    def gold_table(self) -> list[dict]:
        """Per model and metric: target gold (with its interval) and the seed domain's gold."""
        rows = []
        for name, trained in self.models.items():
            seed = trained.measured("seed-gold")
            for metric, found in trained.measured("gold").items():
                rows.append({"specialist": name, "metric": metric, "value": found["value"], "low": found["low"],
                             "high": found["high"], "seed_gold": seed.get(metric, {}).get("value")})
        return rows

    def metric_rows(self) -> pa.Table:
        """Round 0's ``metrics`` rows: each model alone, source ``model:<name>``, on ``gold`` and
        ``seed-gold``."""
        rows = [{"round": 0, "split": split, "family": key.split("/", 1)[0], "metric": key.split("/", 1)[1],
                 "value": found["value"], "source": f"model:{name}", "low": found["low"], "high": found["high"],
                 "images": found["images"]}
                for name, trained in self.models.items() for split in ("gold", "seed-gold")
                for key, found in trained.measured(split).items()]
        return pa.Table.from_pylist(rows, schema=schema_for("metrics"))

    def write_metrics(self, store: Store) -> None:
        with store.writer(0) as writer:
            writer.write("metrics", "bootstrap", self.metric_rows())


def models_dir(root: str | Path, round_id: int) -> Path:
    return Path(root) / f"round-{round_id}"


def train_specialists(world: World, root: str | Path, profile: Profile, splits: tuple[str, ...],
                      only: tuple[str, ...] | None = None, step: Callable[[str], None] | None = None,
                      round_id: int = 0, measure: bool = True, gates: GateConfig | None = None,
                      calibration: TrainingSet | None = None) -> ModelSet:
    """Train ``only`` of the registered specialists (default: all) with the profile's bootstrap
    budget on the world's truth of ``splits`` into ``root``, and measure each on the gold (and on
    the seed-gold, when the world has one) unless ``measure`` is false (their manifests then hold
    no gold metrics: see ``engine.loop.training``); with ``gates``, the gates they will face, each
    measurement stops early for the tasks that cannot pass them beside the models measured before
    it (``GateConfig.early_stop``, ``rival_bars``); with ``calibration`` (held-out seed-domain
    truth: the zoo's), each chooses its thresholds there first (``Trainer.calibrate``)."""
    only = tuple(TRAINERS) if only is None else only
    unknown = [n for n in only if n not in TRAINERS]
    if unknown:
        raise ValueError(f"unknown specialist(s) to train: {unknown}; known: {', '.join(TRAINERS)}")
    gold, seed_gold = gold_stores(world)
    data = world_training_set(world, splits)
    if not len(data):
        raise ValueError(f"the world in {world.root} has no {' or '.join(splits)} truth to train on")
    models: dict[str, Trained] = {}
    for name in only:
        if step:
            step(f"train {name} on {'+'.join(splits)}")
        trainer = TRAINERS[name]
        budget = budget_for(profile.bootstrap, trainer)
        if measure:
            stop = gates.early_stop(rival_bars(models, gates)) if gates else None
            models[name] = train_and_measure(trainer, data, Path(root), budget, gold, device=profile.device,
                                             seed_gold=seed_gold, stop=stop, calibration=calibration)
        else:
            models[name] = train_model(trainer, data, Path(root), budget, gold, device=profile.device, seed_gold=seed_gold)
        log.info("trained %s on %s: %s", name, splits, models[name].gold)
    return ModelSet(round_id, models)


def bootstrap(world: World, models_root: str | Path, profile: Profile, only: tuple[str, ...] | None = None,
              step: Callable[[str], None] | None = None, measure: bool = True, gates: GateConfig | None = None,
              calibration: TrainingSet | None = None) -> ModelSet:
    """Round 0: the specialists trained on the world's seed split (the curated, labelled data a
    user starts from), into ``<models>/round-0``."""
    return train_specialists(world, models_dir(models_root, 0), profile, ("seed",), only, step, measure=measure,
                             gates=gates, calibration=calibration)


def oracle(world: World, models_root: str | Path, profile: Profile, only: tuple[str, ...] | None = None,
           step: Callable[[str], None] | None = None) -> ModelSet:
    """The ceiling of each family: the same models with the same budget, trained on the seed truth
    and the target domain's pool truth (never gold), into ``<models>/oracle``: what a refinement
    round (which trains on the seed and its pool annotations) would reach were those annotations
    perfect. Only a synthetic world has pool truth. (On the pool alone, 129 images against the
    seed's 241, the same epochs are half the steps: the default profile's YOLO scored F1 0.017,
    no ceiling.)"""
    return train_specialists(world, Path(models_root) / "oracle", profile, ("seed", "pool"), only, step)


def fine_tuned_oracle(world: World, models_root: str | Path, profile: Profile, start: ModelSet,
                      step: Callable[[str], None] | None = None) -> ModelSet:
    """The ceiling of a loop that starts from released weights (the zoo): each of ``start``'s
    models fine-tuned on the seed and the pool truth (never gold) with the profile's refinement
    budget, once per refinement round, into ``<models>/oracle/round-<r>``: what the refinement
    rounds would reach were their annotations perfect. A model that learns nothing stays as it is."""
    gold, seed_gold = gold_stores(world)
    data = world_training_set(world, ("seed", "pool"))
    models: dict[str, Trained] = {}
    for name, trained in start.models.items():
        trainer = TRAINERS[name]
        for r in range(1, profile.refinement_rounds + 1 if trainer.trains else 1):
            if step:
                step(f"oracle round {r}: fine-tune {name} on seed+pool truth")
            trained = train_and_measure(trainer, data, Path(models_root) / "oracle" / f"round-{r}",
                                        budget_for(profile.refine, trainer), gold, previous=trained,
                                        device=profile.device, seed_gold=seed_gold)
        models[name] = trained
    return ModelSet(start.round, models)
