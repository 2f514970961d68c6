"""Tiny models built by the tests themselves, and batches of world images to run them on."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from engine.sources import load_rgb
from engine.store import Store
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


@pytest.fixture(scope="session")
def tiny_florence2(small_world, tmp_path_factory):
    """A tiny Florence-2 (random init, then over-fitted for a few seconds to fixed answers per task),
    saved as a checkpoint folder: enough to exercise generation, parsing and scoring end to end."""
    from specialists.florence2_build import build_model, build_processor, save_checkpoint, train_tokenizer

    torch.manual_seed(0)
    corpus = Store(small_world.truth).read("texts").column("text").to_pylist() + [CAPTION, "OPEN"]
    tokenizer = train_tokenizer(corpus, vocab_size=800)
    processor = build_processor(tokenizer)
    model = build_model("tiny", tokenizer)
    batch = gold_batch(small_world, 2, with_prompts=False)
    tasks = [("<CAPTION>", CAPTION), ("<OD>", OD_TARGET), ("<OCR_WITH_REGION>", OCR_TARGET),
             ("<CAPTION_TO_PHRASE_GROUNDING>" + CAPTION, GROUND_TARGET)]
    images = [im for im in batch.images for _ in tasks]
    prompts = [p for _ in batch.images for p, _ in tasks]
    targets = [t for _ in batch.images for _, t in tasks]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    labels = tokenizer(targets, return_tensors="pt", padding=True, add_special_tokens=True).input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    model.eval()
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("florence2") / "tiny")
