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


def test_a_mirrored_od_target_mirrors_each_box_and_keeps_raster_order():
    from specialists.training.florence2_recipe import mirrored_od_target

    target = "car<loc_100><loc_50><loc_300><loc_200>sign<loc_600><loc_50><loc_990><loc_120>"
    # x bins k -> 999 - k with x1 and x2 swapped; the sign now starts further left, so it comes first
    assert mirrored_od_target(target) == ("sign<loc_9><loc_50><loc_399><loc_120>"
                                          "car<loc_699><loc_50><loc_899><loc_200>")
    assert mirrored_od_target(mirrored_od_target(target)) == target


def test_mirrored_od_examples_see_the_mirrored_image(setup):
    import numpy as np

    from specialists.training.florence2_recipe import MIRRORED, with_mirrored_od

    examples, pixels, _ = setup
    grown, images = with_mirrored_od(examples, pixels)
    extra = grown[len(examples):]
    od = [e for e in examples if e.task == "<OD>"]
    assert len(extra) == len(od) > 0 and all(e.task == "<OD>" for e in extra)
    first = extra[0]
    original = first.image_id.removesuffix(MIRRORED)
    assert np.array_equal(images[first.image_id], pixels[original][:, ::-1])
    assert set(images) == set(pixels) | {e.image_id for e in extra}


def test_training_with_mirrored_od_resumes_its_own_state(setup, tmp_path):
    examples, pixels, tokenizer = setup
    config = Florence2TrainConfig(steps=2, batch_size=2, save_every=1, warmup=1, flip_od=True)
    model, processor = fresh_model(tokenizer)
    result = train_florence2(model, processor, examples, pixels, tmp_path, config, fresh=True)
    n_od = sum(e.task == "<OD>" for e in examples)
    assert result.steps == 2 and result.tasks["<OD>"] == 2 * n_od
    model, processor = fresh_model(tokenizer)
    assert train_florence2(model, processor, examples, pixels, tmp_path, config, fresh=True).resumed_from == 2
