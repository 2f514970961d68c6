"""Geometry: the one home of box arrays, box IoU, greedy box matching, crop windows and rows grouped by image.
Specialists, filters, trainers and the evaluator all import it (masks: ``schemas.masks``)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa


def box_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An (n, 4) float32 array of a box column (slices and chunks respected); null boxes become NaN rows."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 4), np.float32)
    width = arr.type.list_size
    values = arr.values.slice(arr.offset * width, len(arr) * width)
    out = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    if arr.null_count:
        out[np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))] = np.nan
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes (pycocotools' bbox IoU, which takes xywh)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    xywh = lambda x: np.c_[x[:, :2], x[:, 2:] - x[:, :2]].astype(np.float64)  # noqa: E731
    return np.asarray(_coco_iou(xywh(a), xywh(b), [0] * len(b))).reshape(len(a), len(b))


def square_window(box, size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The pixel window (x1, y1, x2, y2) of a square around ``box`` (xyxy): its longer side plus
    ``margin`` of it on each side, centred on the box and clipped to an image of ``size`` (w, h).
    At least one pixel each way, so a degenerate box still has a window."""
    if margin < 0:
        raise ValueError(f"a crop margin must be >= 0, got {margin}")
    w, h = size
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return _pixel_window(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, size)


def _pixel_window(x1: float, y1: float, x2: float, y2: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The whole pixels covering (x1, y1, x2, y2), clipped to an image of ``size`` (w, h), at least one each way."""
    w, h = size
    a, b = int(max(0, np.floor(x1))), int(max(0, np.floor(y1)))
    c, d = int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2)))
    a, b = min(a, w - 1), min(b, h - 1)
    return a, b, max(c, a + 1), max(d, b + 1)


def line_window(box, size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The pixel window (x1, y1, x2, y2) of a text line's ``box`` (xyxy) grown by ``margin`` times its
    height on every side, clipped to an image of ``size`` (w, h): the tight crop a line is read on.
    At least one pixel each way, so a degenerate box still has a window."""
    if margin < 0:
        raise ValueError(f"a crop margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = margin * max(y2 - y1, 1.0)
    return _pixel_window(x1 - pad, y1 - pad, x2 + pad, y2 + pad, size)


def box_in_window(box, window: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """``box`` (xyxy, image pixels) in the coordinates of ``window`` (x1, y1, x2, y2), clipped to it."""
    a, b, c, d = window
    x1, y1, x2, y2 = (float(v) for v in box)
    clip = lambda v, hi: min(max(v, 0.0), float(hi))  # noqa: E731
    return clip(x1 - a, c - a), clip(y1 - b, d - b), clip(x2 - a, c - a), clip(y2 - b, d - b)


def rows_by_image(table: pa.Table) -> dict[str, list[dict]]:
    """The rows of a table as dicts, grouped by image id."""
    out: dict[str, list[dict]] = defaultdict(list)
    for row in table.to_pylist():
        out[row["image_id"]].append(row)
    return out


def match_boxes(pred: list[dict], gt: list[dict], iou: float, same_label: bool = True) -> list[tuple[int, int, float]]:
    """Greedy matching, highest score first: (pred index, gt index, IoU) of each true positive."""
    if not pred or not gt:
        return []
    ious = box_iou(np.array([p["box"] for p in pred]), np.array([g["box"] for g in gt]))
    if same_label:
        labels = np.array([[p["label"] == g["label"] for g in gt] for p in pred])
        ious = np.where(labels, ious, 0.0)
    order = sorted(range(len(pred)), key=lambda i: -(pred[i]["score"] if pred[i]["score"] is not None else 0.0))
    used, matches = set(), []
    for i in order:
        candidates = [(ious[i, j], j) for j in range(len(gt)) if j not in used and ious[i, j] >= iou]
        if candidates:
            best, j = max(candidates)
            used.add(j)
            matches.append((i, j, float(best)))
    return matches


def _coco_iou(a, b, crowd):
    import pycocotools.mask as mask_utils

    return mask_utils.iou(a, b, crowd)
