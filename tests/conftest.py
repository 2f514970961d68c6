"""Shared fixtures: a small world and tiny models, each made once per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports `engine`: keep Ray's, Prefect's and ultralytics' files of the tests out
# of the user's ~/.fld (one folder per machine, so Prefect's database is built once).
os.environ.setdefault("FLD_HOME", str(Path(tempfile.gettempdir()) / "fld-tests-home"))

import pytest  # noqa: E402
import torch  # noqa: E402

from engine import settings  # noqa: E402

settings.apply()  # the tests are an entry point, like the CLI

from engine.world.config import WorldConfig  # noqa: E402
from engine.world.make import make_world  # noqa: E402


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """30 images (9 seed, 15 pool, 6 gold) drawn in one process."""
    return make_world(WorldConfig(images=30, seed=7), tmp_path_factory.mktemp("world"), workers=1)


@pytest.fixture(scope="session")
def yolo_weights(tmp_path_factory):
    from specialists.yolo import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("yolo") / "tiny.pt"
    YOLO("yolov8n.yaml").save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory):
    from specialists.sam import ARCHITECTURES, build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny.pth"
    torch.save(build_sam(ARCHITECTURES["tiny"]).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_florence2(small_world, tmp_path_factory):
    """A tiny Florence-2 (random init, then over-fitted for a few seconds to fixed answers per task),
    saved as a checkpoint folder: enough to exercise generation, parsing and scoring end to end."""
    from specialists.florence2_build import build_model, build_processor, save_checkpoint, train_tokenizer
    from tests.batches import CAPTION, GROUND_TARGET, OCR_TARGET, OD_TARGET, gold_batch

    torch.manual_seed(0)
    from engine.dataset.store import Store

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
