"""A toy specialist from outside the package, to show that adding one touches no engine code:
this module (the specialist, its trainer) plus ``register`` (the registry line).

The toy detector learns the box prior: the mean relative box and the most common label of the
training objects, and predicts that box on every image (the trivial answer of detection)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.geometry import box_array
from specialists.base import Batch, Specialist
from specialists.columns import region_table
from specialists.training.trainer import Serving, Task, Trainer, TrainingSet

PLUGIN = "tests.toy_specialist:build"


class ToyDetector(Specialist):
    name = "toy"
    role = "detector"
    produces = ("regions",)

    def __init__(self, box: Sequence[float], label: str):
        super().__init__(batch_size=64)
        self.box, self.label = np.asarray(box, np.float32), label

    def load(self) -> None:
        self._version = f"prior-{self.label}"

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        boxes = np.array([self.box * np.array([w, h, w, h], np.float32) for w, h in (batch.sizes[i] for i in batch.image_ids)])
        return {"regions": region_table(batch.image_ids, boxes.reshape(-1, 4), [self.label] * len(batch),
                                        np.full(len(batch), 0.5, np.float32), kind="object", specialist=self.name,
                                        version=self.version, round_id=batch.round, id_prefix="toy")}


def build(box: Sequence[float], label: str) -> ToyDetector:
    return ToyDetector(box, label)


@dataclass(frozen=True)
class ToyBudget:
    pass


class ToyTrainer(Trainer):
    name = "toy"
    tasks = (Task("<OD>", "region-text/detection_f1"),)
    Budget = ToyBudget

    def settings(self, data: TrainingSet, budget: ToyBudget, previous: dict | None, device: str) -> dict:
        return {}

    def train(self, data: TrainingSet, folder: Path, budget: ToyBudget, previous: dict | None, device: str) -> dict:
        regions = data.tables["regions"]
        objects = regions.filter(pc.equal(regions.column("kind"), "object"))
        if objects.num_rows == 0:
            raise ValueError("no objects to learn a box prior from")
        sizes = np.array([data.sizes[i] * 2 for i in objects.column("image_id").to_pylist()], np.float32)
        box = (box_array(objects.column("box")) / sizes).mean(axis=0)
        label = Counter(objects.column("label").to_pylist()).most_common(1)[0][0]
        weights = folder / "prior.json"
        weights.write_text(json.dumps({"box": box.tolist(), "label": label}))
        return {"weights": str(weights), "box": box.tolist(), "label": label}

    def serve(self, manifest: dict, tasks: Sequence[str], device: str) -> list[Serving]:
        return [Serving(PLUGIN, {"box": manifest["box"], "label": manifest["label"]}, key="toy", min_score=0.0)]
