"""Masks as COCO RLE, the one mask format of the dataset: encoding, decoding and IoU through
pycocotools, and a reader of the compressed counts that catches a malformed string before it is
written (pycocotools decodes such strings in C without checking them: a garbage mask, no error)."""

from __future__ import annotations

import numpy as np


def encode_rle(mask: np.ndarray) -> dict:
    """A bool/uint8 (height x width) mask as ``{"size": [h, w], "counts": str}``."""
    import pycocotools.mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """The bool (height x width) mask of an RLE dict as stored in the dataset."""
    import pycocotools.mask as mask_utils

    return mask_utils.decode({"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}).astype(bool)


def rle_iou(a: list[dict], b: list[dict]) -> np.ndarray:
    """IoU matrix (len(a) x len(b)) between two lists of stored RLE masks of one image."""
    import pycocotools.mask as mask_utils

    if not a or not b:
        return np.zeros((len(a), len(b)))
    to_coco = lambda rs: [{"size": list(r["size"]), "counts": r["counts"].encode("ascii")} for r in rs]  # noqa: E731
    return np.asarray(mask_utils.iou(to_coco(a), to_coco(b), [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))


class RleError(ValueError):
    """A COCO RLE that is not well formed."""


def rle_run_lengths(counts: str) -> list[int]:
    """Decode COCO's LEB128-like compressed ``counts`` string into run lengths (maskApi.c)."""
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise RleError("counts string ends in the middle of a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise RleError(f"character {counts[p]!r} at {p} is not valid RLE")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise RleError(f"run {len(runs)} has negative length {x}")
        runs.append(x)
    return runs


def check_rle(size: list[int] | tuple[int, int], counts: str) -> None:
    """Raise RleError unless ``counts`` encodes exactly ``size[0] * size[1]`` pixels."""
    if len(size) != 2 or size[0] <= 0 or size[1] <= 0:
        raise RleError(f"size {list(size)} is not [height, width] with both > 0")
    total = sum(rle_run_lengths(counts))
    if total != size[0] * size[1]:
        raise RleError(f"runs cover {total} pixels, size {list(size)} has {size[0] * size[1]}")
