"""Building annotation tables column by column (no per-box Python dicts on the hot path)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas import schema_for


def region_table(
    image_ids: list[str],
    boxes: np.ndarray,
    labels: list[str | None],
    scores: np.ndarray | None,
    *,
    kind: str,
    specialist: str,
    version: str,
    round_id: int,
    id_prefix: str,
    extra: dict[str, pa.Array] | None = None,
) -> pa.Table:
    """``regions`` rows: one per box, ids ``<image>-<prefix><k>`` numbered per image."""
    n = len(image_ids)
    counters: dict[str, int] = {}
    ids = []
    for image in image_ids:
        k = counters.get(image, 0)
        counters[image] = k + 1
        ids.append(f"{image}-{id_prefix}{k}")
    schema = schema_for("regions")
    columns = {
        "image_id": pa.array(image_ids, pa.string()),
        "region_id": pa.array(ids, pa.string()),
        "kind": pa.array([kind] * n, pa.string()),
        "box": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(boxes, np.float32).reshape(-1)), 4),
        "label": pa.array(labels, pa.string()),
        "round": pa.array(np.full(n, round_id, np.int32)),
        "specialist": pa.array([specialist] * n, pa.string()),
        "specialist_version": pa.array([version] * n, pa.string()),
        "score": pa.array(np.asarray(scores, np.float32)) if scores is not None else pa.nulls(n, pa.float32()),
        "score_source": pa.array(["model_probability" if scores is not None else "none"] * n, pa.string()),
        **(extra or {}),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, schema)], schema=schema)
