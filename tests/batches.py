"""Batches of world images, and the answers the tiny Florence-2 fixture is trained to give."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.sources import load_rgb
from engine.dataset.store import Store
from specialists.base import Batch

CAPTION = "a red house next to a tree"
OD_TARGET = "house<loc_100><loc_150><loc_400><loc_600>tree<loc_600><loc_100><loc_900><loc_800>"
OCR_TARGET = "OPEN<loc_100><loc_100><loc_300><loc_100><loc_300><loc_200><loc_100><loc_200>"
GROUND_TARGET = "a red house<loc_100><loc_150><loc_400><loc_600>"


def gold_batch(world, n: int = 3, with_prompts: bool = True) -> Batch:
    gold = Store(world.gold)
    images = gold.read("images").to_pylist()[:n]
    ids = [r["image_id"] for r in images]
    keep = lambda t: t.filter(pc.is_in(t.column("image_id"), pa.array(ids)))  # noqa: E731
    return Batch(ids, [load_rgb(r["uri"]) for r in images],
                 regions=keep(gold.read("regions")) if with_prompts else None,
                 texts=keep(gold.read("texts")) if with_prompts else None)


def signed_batch(world, n: int = 3) -> Batch:
    """Up to ``n`` images of the world (any split) whose truth holds a sign with a word."""
    truth = Store(world.truth)
    regions = truth.read("regions")
    ids = sorted(set(regions.filter(pc.equal(regions.column("kind"), "ocr")).column("image_id").to_pylist()))[:n]
    images = {r["image_id"]: r["uri"] for r in truth.read("images").to_pylist()}
    keep = lambda t: t.filter(pc.is_in(t.column("image_id"), pa.array(ids)))  # noqa: E731
    return Batch(ids, [load_rgb(images[i]) for i in ids], regions=keep(regions), texts=keep(truth.read("texts")))
