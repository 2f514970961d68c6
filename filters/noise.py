"""A noise simulator for measuring filters: turns ground-truth regions into specialist-like
output with known defects (missed objects, duplicates, jittered boxes, wrong labels,
low-confidence false positives), so precision and recall before and after filtering can be
compared against the truth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filters.regions import boxes_of
from schemas import schema_for


@dataclass(frozen=True)
class NoiseConfig:
    specialist: str = "noisy"
    miss_rate: float = 0.15
    duplicate_rate: float = 0.4
    jitter: float = 0.06
    """Standard deviation of each box edge's shift, as a fraction of the box's size."""
    wrong_label_rate: float = 0.1
    false_positives_per_image: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("miss_rate", "duplicate_rate", "wrong_label_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.jitter < 0 or self.false_positives_per_image < 0:
            raise ValueError("jitter and false_positives_per_image must be >= 0")


def simulate(truth: pa.Table, sizes: Mapping[str, tuple[int, int]], config: NoiseConfig = NoiseConfig()) -> pa.Table:
    """Noisy ``regions`` rows (kind object, round 0) made from ground-truth object regions."""
    rng = np.random.default_rng(config.seed)
    boxes = boxes_of(truth)
    labels = truth.column("label").to_pylist()
    images = truth.column("image_id").to_pylist()
    vocabulary = sorted(set(labels))
    out: list[dict] = []

    def emit(image: str, box: np.ndarray, label: str, score: float) -> None:
        w, h = sizes[image]
        x1, y1, x2, y2 = np.clip(box, 0, [w, h, w, h])
        if x2 - x1 < 1 or y2 - y1 < 1:
            return
        out.append({"image_id": image, "region_id": f"{config.specialist}-{len(out)}", "kind": "object",
                    "box": [float(x1), float(y1), float(x2), float(y2)], "quad": None, "mask": None,
                    "label": label, "members": None, "round": 0, "specialist": config.specialist,
                    "specialist_version": f"noise-{config.seed}", "score": float(np.clip(score, 0, 1)),
                    "score_source": "model_probability"})

    def jittered(box: np.ndarray) -> np.ndarray:
        size = np.r_[box[2:] - box[:2], box[2:] - box[:2]]
        return box + rng.normal(0, config.jitter, 4) * size

    for box, label, image in zip(boxes, labels, images):
        if rng.random() < config.miss_rate:
            continue
        wrong = rng.random() < config.wrong_label_rate
        shown = rng.choice([v for v in vocabulary if v != label]) if wrong and len(vocabulary) > 1 else label
        score = rng.beta(3, 3) if wrong else rng.beta(6, 2)
        emit(image, jittered(box), shown, score)
        while rng.random() < config.duplicate_rate:
            emit(image, jittered(box), shown, score * rng.uniform(0.5, 0.95))
    for image in sorted(set(sizes)):
        w, h = sizes[image]
        for _ in range(rng.poisson(config.false_positives_per_image)):
            bw, bh = rng.uniform(0.05, 0.4) * w, rng.uniform(0.05, 0.4) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            emit(image, np.array([x, y, x + bw, y + bh]), rng.choice(vocabulary), rng.beta(2, 6))
    return pa.Table.from_pylist(out, schema=schema_for("regions"))
