"""The trainer contract: one per specialist. A trainer says which tasks its specialist serves and
which gold metric gates each, how it trains from a ``TrainingSet`` under its budget, and how a
trained model becomes a round's specialists (``Serving``). The engine loops over the registry of
trainers (``specialists.training.registry``) for bootstrap, refinement, gates and profiles; it
measures every model on gold itself, through the round's own annotation path.

Plain Python: no Ray, no Prefect, no engine imports (the images are read through the training
set's own ``load``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

TABLES = ("texts", "regions", "triplets")


@dataclass(frozen=True)
class Task:
    """A task a specialist serves, and the gold metric (``family/metric``) that gates it."""

    name: str
    metric: str
    exclusive: bool = False
    """One model a round serves it (two segmenters would mask the same boxes): the best on gold."""


@dataclass(frozen=True)
class Serving:
    """One specialist of a round, as a trained model runs there."""

    specialist: str
    """Registry name (or ``package.module:factory``)."""
    options: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    min_score: float | None = None
    """The confidence below which the round's region filter drops this specialist's rows."""
    scored_kind: str | None = None
    """The region kind ``min_score`` holds for (``object``: a captioner's boxes, not its region
    captions); None: every kind of its rows."""
    labels: tuple[str, ...] = ()
    """A detector's categories: its object labels judge the round's region captions on its boxes
    (``filters.captions``)."""
    reads_text: bool = False
    """An OCR reader: the text it reads inside a region caption's box judges the text the caption quotes."""


@dataclass(frozen=True)
class TrainingSet:
    """Images (id -> uri, size) and their annotations as Arrow tables; ``load`` reads a uri's pixels."""

    uris: dict[str, str]
    sizes: dict[str, tuple[int, int]]
    tables: dict[str, pa.Table]
    load: Callable[[str], np.ndarray]
    exhaustive: frozenset[str] | None = None
    """Images whose annotations list every object (truth): without objects they are true
    backgrounds. Others (a round's kept rows) teach only where they hold objects. None: all."""

    def __len__(self) -> int:
        return len(self.uris)

    def ids(self) -> list[str]:
        return sorted(self.uris)

    def counts(self) -> dict[str, int]:
        return {t: self.tables[t].num_rows for t in TABLES}

    def pixels(self, image_id: str) -> np.ndarray:
        return self.load(self.uris[image_id])

    def merged(self, other: TrainingSet) -> TrainingSet:
        """Both sets; an image is exhaustive when either set says so (None counts as all)."""
        ex = [set(s.uris) if s.exhaustive is None else set(s.exhaustive) for s in (self, other)]
        return TrainingSet({**self.uris, **other.uris}, {**self.sizes, **other.sizes},
                           {t: pa.concat_tables([self.tables[t], other.tables[t].cast(self.tables[t].schema)])
                            for t in TABLES}, self.load, frozenset(ex[0] | ex[1]))

    def only(self, ids: Sequence[str]) -> TrainingSet:
        keep = set(ids)
        return TrainingSet({i: u for i, u in self.uris.items() if i in keep}, {i: s for i, s in self.sizes.items() if i in keep},
                           self.tables, self.load, self.exhaustive)


class Trainer(ABC):
    """How one specialist learns. Subclasses set ``name`` (the specialist's registry name, also
    the folder its models live in), ``tasks`` and ``Budget`` (a dataclass of its training knobs)."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[Task, ...]]
    Budget: ClassVar[type]
    trains: ClassVar[bool] = True
    """False for a specialist without weights to learn (measured on gold only, kept as it is)."""
    prompted_tasks: ClassVar[frozenset[str]] = frozenset()
    """Tasks measured given the gold boxes and descriptions as prompts (a segmenter's, a region
    captioner's, a grounder's), not on what the model's other tasks found: each is measured apart
    from the trainer's other tasks."""

    def prompted(self, manifest: dict) -> frozenset[str]:
        """The ``prompted_tasks`` of a trained model (some models learn to take prompts)."""
        return self.prompted_tasks

    def metric(self, task: str) -> str:
        return next(t.metric for t in self.tasks if t.name == task)

    def served_tasks(self, manifest: dict) -> list[str]:
        """The tasks a trained model can serve (Florence-2: those it had examples of)."""
        return [t.name for t in self.tasks]

    def check(self, manifest: dict) -> None:
        """Raise ValueError when a model made elsewhere (the zoo) cannot serve as this code serves it
        (its weights' hashes are checked before this)."""

    def calibrate(self, manifest: dict, data: TrainingSet, device: str) -> dict:
        """Thresholds of the trained model of ``manifest`` chosen on ``data``: truth of the seed
        domain that neither this model nor gold holds (the zoo's calibration sample). Their facts,
        merged into the manifest before it is measured and served; ``{}`` for a model whose
        thresholds need no held-out images (YOLO chooses its own on its val split)."""
        return {}

    @abstractmethod
    def settings(self, data: TrainingSet, budget: Any, previous: dict | None, device: str) -> dict:
        """What decides the trained model besides the data (for the cache key); JSON-able."""

    @abstractmethod
    def train(self, data: TrainingSet, folder: Path, budget: Any, previous: dict | None, device: str) -> dict:
        """Train into ``folder`` (from ``previous``'s manifest when given); returns the manifest's
        facts, ``weights`` among them (``""`` for a specialist without weights). Raises
        ValueError when ``data`` holds nothing to learn from."""

    @abstractmethod
    def serve(self, manifest: dict, tasks: Sequence[str], device: str) -> list[Serving]:
        """The round's specialists that run the trained model for ``tasks``."""
