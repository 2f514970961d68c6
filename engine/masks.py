"""Masks as COCO RLE, the one mask format of the dataset (pycocotools does the encoding)."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict:
    """A bool/uint8 (height x width) mask as ``{"size": [h, w], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """The bool (height x width) mask of an RLE dict as stored in the dataset."""
    return mask_utils.decode({"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}).astype(bool)


def rle_iou(a: list[dict], b: list[dict]) -> np.ndarray:
    """IoU matrix (len(a) x len(b)) between two lists of stored RLE masks of one image."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    to_coco = lambda rs: [{"size": list(r["size"]), "counts": r["counts"].encode("ascii")} for r in rs]  # noqa: E731
    return np.asarray(mask_utils.iou(to_coco(a), to_coco(b), [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))
