"""Florence-2 training: it runs on the examples of a round, resumes where it was interrupted, and
refuses what it cannot train on."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from engine.dataset.sources import load_rgb
from engine.dataset.store import Store
from specialists.florence2_build import build_model, build_processor, train_tokenizer
from specialists.training.florence2_examples import build_examples
from specialists.training.florence2_train import Florence2TrainConfig, train_florence2


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def setup(small_world):
    store = Store(small_world.truth)
    tables = {t: store.read(t) for t in ("texts", "regions", "triplets")}
    images = store.read("images").to_pylist()
    ids = [r["image_id"] for r in images][:4]
    keep = lambda t: t.filter(pc.is_in(t.column("image_id"), pa.array(ids)))  # noqa: E731
    examples = build_examples(*(keep(tables[t]) for t in ("texts", "regions", "triplets")), store.image_sizes())
    pixels = {r["image_id"]: load_rgb(r["uri"]) for r in images if r["image_id"] in ids}
    tokenizer = train_tokenizer(tables["texts"].column("text").to_pylist(), vocab_size=600)
    return examples, pixels, tokenizer


def fresh_model(tokenizer):
    torch.manual_seed(0)
    return build_model("tiny", tokenizer), build_processor(tokenizer)


CONFIG = Florence2TrainConfig(steps=4, batch_size=2, save_every=2, warmup=2)


def test_an_interrupted_training_resumes_to_the_same_weights(setup, tmp_path):
    examples, pixels, tokenizer = setup
    model, processor = fresh_model(tokenizer)
    straight = train_florence2(model, processor, examples, pixels, tmp_path / "a", CONFIG, fresh=True)
    assert straight.steps == 4 and straight.resumed_from == 0
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    def stop_at_3(done: int, total: int) -> None:
        if done == 3:
            raise Interrupted

    model, processor = fresh_model(tokenizer)
    with pytest.raises(Interrupted):
        train_florence2(model, processor, examples, pixels, tmp_path / "b", CONFIG, fresh=True, progress=stop_at_3)
    model, processor = fresh_model(tokenizer)  # a new process: the state on disk is all there is
    resumed = train_florence2(model, processor, examples, pixels, tmp_path / "b", CONFIG, fresh=True)
    assert resumed.resumed_from == 2 and resumed.steps == 2
    for name, value in model.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


def test_the_state_of_other_settings_is_not_resumed(setup, tmp_path):
    examples, pixels, tokenizer = setup
    model, processor = fresh_model(tokenizer)
    train_florence2(model, processor, examples, pixels, tmp_path, CONFIG, fresh=True)
    model, processor = fresh_model(tokenizer)
    other = Florence2TrainConfig(steps=3, batch_size=2, save_every=2, warmup=2, lr=5e-4)
    assert train_florence2(model, processor, examples, pixels, tmp_path, other, fresh=True).resumed_from == 0


def test_no_examples_and_missing_pixels_are_refused(setup, tmp_path):
    examples, pixels, tokenizer = setup
    model, processor = fresh_model(tokenizer)
    with pytest.raises(ValueError, match="no training examples"):
        train_florence2(model, processor, [], pixels, tmp_path, CONFIG)
    with pytest.raises(ValueError, match="have no pixels"):
        train_florence2(model, processor, examples, {}, tmp_path, CONFIG)


def test_config_validates():
    with pytest.raises(ValueError):
        Florence2TrainConfig(steps=0)
    with pytest.raises(ValueError):
        Florence2TrainConfig(lr=-1.0)
