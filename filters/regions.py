"""Region filters, each a decision over a ``regions`` table: valid geometry, per-specialist
confidence, a per-image cap, NMS within one specialist and one label (torchvision), and blank
crops. Thresholds start from published values (Grounded-SAM: box 0.25, NMS 0.5; SAM's
automatic stage drops masks over 95% of the image) and are all configurable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchvision.ops import nms as torch_nms

from filters.decision import Decision
from schemas.geometry import box_array


@dataclass(frozen=True)
class RegionFilterConfig:
    min_score: float = 0.25
    min_score_by_specialist: Mapping[str, float] = field(default_factory=dict)
    """Floors by specialist (``yolo``) or by specialist and region kind (``florence2/object``: its
    boxes, not its region captions); the kind's floor wins, then the specialist's, then ``min_score``."""
    require_score: bool = False
    """Drop regions without a score (otherwise they pass the confidence filter)."""
    nms_iou: float = 0.5
    min_area: float = 16.0
    """Pixels; smaller regions are dropped as tiny."""
    max_area_fraction: float = 0.95
    edge_tolerance: float = 0.5
    max_per_image: int = 1000
    """Highest-scored regions kept per image and specialist before NMS (bounds the work)."""
    min_crop_std: float = 2.0
    """A crop whose pixel standard deviation is below this is blank."""

    def __post_init__(self) -> None:
        for name in ("min_score", "nms_iou", "max_area_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        for specialist, value in self.min_score_by_specialist.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"min_score_by_specialist[{specialist!r}] must be within [0, 1], got {value}")
        if self.min_area < 0 or self.min_crop_std < 0 or self.edge_tolerance < 0:
            raise ValueError("min_area, min_crop_std and edge_tolerance must be >= 0")
        if self.max_per_image < 1:
            raise ValueError(f"max_per_image must be >= 1, got {self.max_per_image}")


def boxes_of(rows: pa.Table) -> np.ndarray:
    """The table's boxes as an (n, 4) float64 array."""
    return box_array(rows.column("box")).astype(np.float64)


def scores_of(rows: pa.Table) -> np.ndarray:
    """Scores as float64; a missing score is NaN."""
    return pc.fill_null(rows.column("score").cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def group_ids(rows: pa.Table, columns: list[str]) -> np.ndarray:
    """One integer per distinct combination of ``columns`` (nulls are a value of their own)."""
    keys = [pc.fill_null(rows.column(c).cast(pa.string()), "\x00") for c in columns]
    joined = pc.binary_join_element_wise(*keys, "\x1f")
    return pc.dictionary_encode(joined).combine_chunks().indices.to_numpy(zero_copy_only=False).astype(np.int64)


def geometry(rows: pa.Table, sizes: Mapping[str, tuple[int, int]], config: RegionFilterConfig) -> Decision:
    """Degenerate, outside-the-image, tiny and near-full-image regions."""
    boxes = boxes_of(rows)
    ids = rows.column("image_id").to_pylist()
    wh = np.array([sizes.get(i, (np.nan, np.nan)) for i in ids], np.float64).reshape(-1, 2)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = np.clip(np.nan_to_num(w), 0, None) * np.clip(np.nan_to_num(h), 0, None)
    tol = config.edge_tolerance
    with np.errstate(invalid="ignore"):
        degenerate = ~np.isfinite(boxes).all(axis=1) | ~(w > 0) | ~(h > 0)
        outside = (boxes[:, :2] < -tol).any(axis=1) | (boxes[:, 2] > wh[:, 0] + tol) | (boxes[:, 3] > wh[:, 1] + tol)
        full = area > config.max_area_fraction * wh[:, 0] * wh[:, 1]
    box = lambda i: boxes[i].round(1).tolist()  # noqa: E731
    return Decision.first_failure("geometry", len(rows), [
        (np.isnan(wh[:, 0]), "unknown_image: not among the batch's readable images"),
        (degenerate, lambda i: f"degenerate: box {box(i)}"),
        (outside, lambda i: f"outside_image: box {box(i)} in {int(wh[i, 0])}x{int(wh[i, 1])}"),
        (area < config.min_area, lambda i: f"tiny: {area[i]:.1f} px < {config.min_area}"),
        (full, lambda i: f"near_full_image: {area[i] / (wh[i, 0] * wh[i, 1]):.2f} of the image"),
    ])


def floor_of(config: RegionFilterConfig, specialist: str, kind: str) -> float:
    """The confidence floor of ``specialist``'s regions of ``kind``."""
    by = config.min_score_by_specialist
    return by.get(f"{specialist}/{kind}", by.get(specialist, config.min_score))


def confidence(rows: pa.Table, config: RegionFilterConfig) -> Decision:
    """Per-specialist (and per-kind: ``floor_of``) thresholds; NaN or out-of-range scores are invalid."""
    scores = scores_of(rows)
    has = pc.is_valid(rows.column("score")).to_numpy(zero_copy_only=False)
    pairs = list(zip(rows.column("specialist").to_pylist(), rows.column("kind").to_pylist()))
    thresholds = {pair: floor_of(config, *pair) for pair in set(pairs)}
    threshold = np.array([thresholds[pair] for pair in pairs], np.float64)
    with np.errstate(invalid="ignore"):
        invalid = has & ~((scores >= 0.0) & (scores <= 1.0))
        low = has & (scores < threshold)
    return Decision.first_failure("confidence", len(rows), [
        (~has & bool(config.require_score), "no_score"),
        (invalid, lambda i: f"invalid_score: {scores[i]}"),
        (low, lambda i: f"low_confidence: {scores[i]:.3f} < {threshold[i]:.2f}"),
    ])


def per_image_cap(rows: pa.Table, config: RegionFilterConfig) -> Decision:
    """Keep the ``max_per_image`` highest-scored regions of each (image, specialist)."""
    groups = group_ids(rows, ["image_id", "specialist"])
    scores = np.nan_to_num(scores_of(rows), nan=-1.0)
    order = np.lexsort((-scores, groups))
    rank = np.empty(len(rows), np.int64)
    if len(rows):
        starts = np.r_[0, np.flatnonzero(np.diff(groups[order])) + 1]
        sizes = np.diff(np.r_[starts, len(rows)])
        rank[order] = np.arange(len(rows)) - np.repeat(starts, sizes)
    return Decision.from_mask("per_image_cap", rank >= config.max_per_image,
                              f"over_cap: more than {config.max_per_image} regions of one specialist on one image")


def grouped_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou: float, chunk: int = 512) -> np.ndarray:
    """Keep-mask of NMS within each group. Consecutive groups are packed into chunks of about
    ``chunk`` boxes and separated by coordinate offsets, one ``torchvision.ops.nms`` call per chunk.

    Why not ``batched_nms``: on the CPU with more than 1,000 boxes it loops over every group with
    an O(n) scan each (O(n x groups): 68 s for 200k boxes in 50k groups); a single offset call is
    O(n^2). Chunks keep both small."""
    n = len(boxes)
    keep = np.zeros(n, bool)
    if n == 0:
        return keep
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    group_starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    span = float(np.nanmax(np.abs(boxes))) + 1.0 if n else 1.0
    t_boxes, t_scores = torch.from_numpy(boxes).float(), torch.from_numpy(scores).float()
    start = 0
    while start < n:
        after = group_starts[group_starts >= start + chunk]
        end = int(after[0]) if len(after) else n
        idx = torch.from_numpy(order[start:end])
        offset = torch.from_numpy((sorted_groups[start:end] - sorted_groups[start]).astype(np.float64) * span).float()
        kept = torch_nms(t_boxes[idx] + offset[:, None], t_scores[idx], iou)
        keep[order[start:end][kept.numpy()]] = True
        start = end
    return keep


def nms(rows: pa.Table, config: RegionFilterConfig) -> Decision:
    """Non-maximum suppression within each (image, specialist, kind, label), all images together."""
    groups = group_ids(rows, ["image_id", "specialist", "kind", "label"])
    keep = grouped_nms(boxes_of(rows), np.nan_to_num(scores_of(rows), nan=0.0), groups, config.nms_iou)
    return Decision.from_mask("nms", ~keep, f"suppressed: overlaps a higher-scored box of the same specialist and label (IoU > {config.nms_iou})")


def blank(rows: pa.Table, pixels: Mapping[str, np.ndarray], config: RegionFilterConfig) -> Decision:
    """Regions whose crop is (nearly) one colour: std from integral images, all boxes of an image at once."""
    boxes = boxes_of(rows)
    ids = np.array(rows.column("image_id").to_pylist(), dtype=object)
    std = np.full(len(rows), np.inf)
    for image_id in set(ids.tolist()):
        if image_id not in pixels:
            continue
        grey = pixels[image_id].astype(np.float64).mean(axis=2)
        h, w = grey.shape
        s1 = np.pad(grey.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        s2 = np.pad((grey**2).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        rows_here = np.flatnonzero(ids == image_id)
        b = boxes[rows_here]
        x1 = np.clip(np.floor(b[:, 0]), 0, w).astype(int)
        y1 = np.clip(np.floor(b[:, 1]), 0, h).astype(int)
        x2 = np.clip(np.ceil(b[:, 2]), 0, w).astype(int)
        y2 = np.clip(np.ceil(b[:, 3]), 0, h).astype(int)
        n = np.maximum((x2 - x1) * (y2 - y1), 1)
        total = s1[y2, x2] - s1[y1, x2] - s1[y2, x1] + s1[y1, x1]
        squares = s2[y2, x2] - s2[y1, x2] - s2[y2, x1] + s2[y1, x1]
        std[rows_here] = np.sqrt(np.clip(squares / n - (total / n) ** 2, 0, None))
    return Decision.from_mask("blank", std < config.min_crop_std, lambda i: f"blank: crop std {std[i]:.2f} < {config.min_crop_std}")
