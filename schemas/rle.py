"""Reading COCO's compressed RLE strings, so that a bad mask is caught before it is written.

pycocotools decodes these strings in C without checking them (a malformed string gives a
garbage mask, not an error), so validation needs this small reader of the same format.
"""

from __future__ import annotations


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
