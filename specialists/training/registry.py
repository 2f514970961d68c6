"""Trainers by specialist name: what bootstrap, refinement, the gates and the profiles loop over.
Adding a specialist is one module in ``specialists/``, one trainer in ``specialists/training/``
and one line here (or ``register`` for a plugin)."""

from __future__ import annotations

from specialists.training.florence2 import Florence2Trainer
from specialists.training.sam import GrabCutTrainer, SamTrainer
from specialists.training.trainer import Trainer
from specialists.training.yolo import YoloTrainer

TRAINERS: dict[str, Trainer] = {t.name: t for t in (YoloTrainer(), SamTrainer(), GrabCutTrainer(), Florence2Trainer())}


def register(trainer: Trainer) -> Trainer:
    """Add a trainer (e.g. a plugin's) under its name; a name already taken is refused."""
    if trainer.name in TRAINERS and TRAINERS[trainer.name] is not trainer:
        raise ValueError(f"a trainer named {trainer.name!r} is registered already")
    TRAINERS[trainer.name] = trainer
    return trainer


def trainer_for(name: str) -> Trainer:
    try:
        return TRAINERS[name]
    except KeyError:
        raise ValueError(f"no trainer for specialist {name!r}; known: {', '.join(TRAINERS)}") from None


def task_metrics() -> dict[str, str]:
    """``specialist:task`` -> the gold metric that gates it, for every registered trainer."""
    return {f"{t.name}:{task.name}": task.metric for t in TRAINERS.values() for task in t.tasks}
