"""Confidence floors chosen on held-out truth (never gold): a detector trained for minutes, or one
whose scores are token probabilities (Florence-2's boxes), scores its boxes on its own scale, and
one fixed floor for every detector would throw most of some detector's boxes away or keep
another's noise. A trainer chooses its model's floor here, and the round's region filter and the
gold measurement keep the model's boxes from it (``Serving.min_score``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import schema_for
from specialists.base import Batch, Specialist
from specialists.training.trainer import TrainingSet

GRID = tuple(float(t) for t in np.round(np.arange(0.02, 0.9, 0.02), 2))


def objects(regions: pa.Table) -> pa.Table:
    return regions.filter(pc.equal(regions.column("kind"), "object"))


def detect(specialist: Specialist, data: TrainingSet, ids: Sequence[str], batch: int = 16) -> pa.Table:
    """``specialist``'s regions on the images ``ids`` of ``data``, ``batch`` images per call."""
    ids = list(ids)
    found = [specialist(Batch(ids[s : s + batch], [data.pixels(i) for i in ids[s : s + batch]]))["regions"]
             for s in range(0, len(ids), batch)]
    return pa.concat_tables(found) if found else schema_for("regions").empty_table()


def calibrate_confidence(predicted: pa.Table, truth: pa.Table, image_ids: Sequence[str], iou: float = 0.5,
                         grid: tuple[float, ...] = GRID) -> tuple[float, float]:
    """The confidence floor in ``grid`` that maximises detection F1 (IoU ``iou``, labels matched)
    of ``predicted``'s object boxes against ``truth``'s on ``image_ids``, and that F1; the lowest
    such floor when several tie."""
    from schemas.geometry import match_boxes, rows_by_image

    pred = rows_by_image(objects(predicted))
    gt = rows_by_image(objects(truth))
    n_gt = sum(len(gt.get(i, [])) for i in image_ids)
    best = (grid[0], 0.0)
    for threshold in grid:
        tp = n_pred = 0
        for i in image_ids:
            kept = [p for p in pred.get(i, []) if (p["score"] or 0.0) >= threshold]
            n_pred += len(kept)
            tp += len(match_boxes(kept, gt.get(i, []), iou))
        f1 = 2 * tp / (n_pred + n_gt) if n_pred + n_gt else 0.0
        if f1 > best[1]:
            best = (float(threshold), f1)
    return best
