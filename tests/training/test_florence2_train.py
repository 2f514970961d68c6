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


def test_a_cropped_od_target_keeps_the_boxes_centred_in_the_crop_clipped_and_in_its_bins():
    from specialists.training.florence2_recipe import cropped_od_target

    # on a 1000 x 500 image: the car spans x 100.5-300.5, y 50.25-150.25 at its bins' centres
    # (centre 200.5, 100.25); the sign x 600.5-990.5, y 25.25-60.25 (centre 795.5, 42.75)
    target = "car<loc_100><loc_100><loc_300><loc_300>sign<loc_600><loc_50><loc_990><loc_120>"
    size = (1000, 500)
    assert cropped_od_target(target, size, (0, 0, 500, 250)) == "car<loc_201><loc_201><loc_601><loc_601>"
    assert cropped_od_target(target, size, (500, 0, 1000, 250)) == "sign<loc_201><loc_101><loc_981><loc_241>"
    # the car's centre is inside, its left edge is not: clipped to the crop's edge
    assert cropped_od_target(target, size, (150, 0, 650, 250)) == "car<loc_0><loc_201><loc_301><loc_601>"
    assert cropped_od_target(target, size, (250, 0, 750, 250)) == ""  # neither centre
    # the whole image: the same bins, in raster order (the sign is higher)
    assert cropped_od_target(target, size, (0, 0, 1000, 500)) == ("sign<loc_600><loc_50><loc_990><loc_120>"
                                                                  "car<loc_100><loc_100><loc_300><loc_300>")


def test_cropped_od_examples_see_their_crop(setup):
    import numpy as np

    from specialists.training.florence2_recipe import CROPPED, with_cropped_od

    examples, pixels, _ = setup
    grown, images = with_cropped_od(examples, pixels, crops=3, seed=1)
    extra = grown[len(examples):]
    od = [e for e in examples if e.task == "<OD>"]
    assert 0 < len(extra) <= 3 * len(od) and all(e.task == "<OD>" and e.target for e in extra)
    for e in extra:
        original = pixels[e.image_id.rsplit(CROPPED, 1)[0]]
        crop = images[e.image_id]
        h, w = original.shape[:2]
        assert 0.6 * h - 1 <= crop.shape[0] <= h and 0.6 * w - 1 <= crop.shape[1] <= w
        # the crop is a window of the original image
        found = [(y, x) for y in range(h - crop.shape[0] + 1) for x in range(w - crop.shape[1] + 1)
                 if np.array_equal(original[y:y + crop.shape[0], x:x + crop.shape[1]], crop)]
        assert found
    again, _ = with_cropped_od(examples, pixels, crops=3, seed=1)
    assert [e.target for e in again] == [e.target for e in grown]  # seeded


def test_training_with_cropped_and_mirrored_od_counts_both(setup, tmp_path):
    from specialists.training.florence2_recipe import with_cropped_od

    examples, pixels, tokenizer = setup
    config = Florence2TrainConfig(steps=2, batch_size=2, save_every=1, warmup=1, flip_od=True, crop_od=2)
    model, processor = fresh_model(tokenizer)
    result = train_florence2(model, processor, examples, pixels, tmp_path, config, fresh=True)
    with_crops = sum(e.task == "<OD>" for e in with_cropped_od(examples, pixels, 2, config.seed)[0])
    assert result.tasks["<OD>"] == 2 * with_crops > 2 * sum(e.task == "<OD>" for e in examples)
    with pytest.raises(ValueError, match="crop_od must be within"):
        Florence2TrainConfig(crop_od=-1)


def test_training_with_mirrored_od_resumes_its_own_state(setup, tmp_path):
    examples, pixels, tokenizer = setup
    config = Florence2TrainConfig(steps=2, batch_size=2, save_every=1, warmup=1, flip_od=True)
    model, processor = fresh_model(tokenizer)
    result = train_florence2(model, processor, examples, pixels, tmp_path, config, fresh=True)
    n_od = sum(e.task == "<OD>" for e in examples)
    assert result.steps == 2 and result.tasks["<OD>"] == 2 * n_od
    model, processor = fresh_model(tokenizer)
    assert train_florence2(model, processor, examples, pixels, tmp_path, config, fresh=True).resumed_from == 2


def test_region_descriptions_move_onto_the_crops_of_their_boxes(setup):
    import numpy as np

    from schemas.geometry import box_in_window, square_window
    from specialists.florence2 import REGION_TO_DESCRIPTION
    from specialists.florence2_parse import decode_bin, location_tokens
    from specialists.training.florence2_recipe import REGION_CROP, with_cropped_regions

    examples, pixels, _ = setup
    moved, images = with_cropped_regions(examples, pixels, margin=0.2)
    regions = [(e, m) for e, m in zip(examples, moved) if e.task == REGION_TO_DESCRIPTION]
    assert regions and len(moved) == len(examples)
    assert [m for e, m in zip(examples, moved) if e.task != REGION_TO_DESCRIPTION] == \
        [e for e in examples if e.task != REGION_TO_DESCRIPTION]  # the other tasks untouched
    for before, after in regions:
        original = pixels[before.image_id]
        h, w = original.shape[:2]
        bins = [int(b) for b in before.prompt.removeprefix(REGION_TO_DESCRIPTION).strip("<loc_>").split("><loc_")]
        box = [decode_bin(b, (w, h)[i % 2]) for i, b in enumerate(bins)]
        window = square_window(box, (w, h), 0.2)
        assert after.image_id == f"{before.image_id}{REGION_CROP}{examples.index(before)}"
        assert np.array_equal(images[after.image_id], original[window[1]:window[3], window[0]:window[2]])
        assert after.prompt == REGION_TO_DESCRIPTION + location_tokens(
            box_in_window(box, window), (window[2] - window[0], window[3] - window[1]))
        assert after.target == before.target and after.task == before.task
    with pytest.raises(ValueError, match="crop_regions must be None or a margin"):
        Florence2TrainConfig(crop_regions=-0.5)


@pytest.mark.parametrize("size", [None, 128])
def test_training_with_cropped_regions_trains_on_the_crops(setup, tmp_path, monkeypatch, size):
    """Region descriptions train on their crops, fed at ``region_size`` when given, beside whole
    images at the processor's size (the dense head learns from the whole images only)."""
    import specialists.training.florence2_train as florence2_train
    from specialists.florence2 import REGION_TO_DESCRIPTION
    from specialists.training.florence2_recipe import REGION_CROP

    made = []

    class Recorded(florence2_train.Batches):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(florence2_train, "Batches", Recorded)
    examples, pixels, tokenizer = setup
    config = Florence2TrainConfig(steps=6, batch_size=2, save_every=3, warmup=1, crop_regions=0.2, region_size=size,
                                  task_weights={REGION_TO_DESCRIPTION: 1.0, "<OD>": 1.0})
    model, processor = fresh_model(tokenizer)
    result = train_florence2(model, processor, examples, pixels, tmp_path, config, fresh=True)
    (batches,) = made
    regions = batches.by_task[REGION_TO_DESCRIPTION]
    assert len(regions) == result.tasks[REGION_TO_DESCRIPTION] > 0
    crops = {batches.items[k][0] for k in regions}
    assert all(REGION_CROP in batches.image_ids[c] for c in crops)
    assert {batches.side[c] for c in crops} == {size or 224}
    assert batches.pixel_values(sorted(crops)[:2]).shape[-1] == (size or 224)
    od = {batches.items[k][0] for k in batches.by_task["<OD>"]}
    assert {batches.side[c] for c in od} == {224} and batches.pixel_values(sorted(od)[:2]).shape[-1] == 224
    with pytest.raises(ValueError, match="region_size needs crop_regions"):
        Florence2TrainConfig(region_size=112)


def test_an_ocr_crop_target_holds_the_texts_the_crop_holds_whole():
    from specialists.training.florence2_recipe import ocr_crop_target

    open_ = ("OPEN", [20.0, 10.0, 60.0, 10.0, 60.0, 20.0, 20.0, 20.0])
    sale = ("SALE", [20.0, 40.0, 50.0, 40.0, 50.0, 48.0, 20.0, 48.0])
    # a 100 x 100 window at (10, 0): both whole, in its bins (x - 10, y), in raster order
    assert ocr_crop_target([sale, open_], (10, 0, 110, 100)) == (
        "OPEN<loc_100><loc_100><loc_500><loc_100><loc_500><loc_200><loc_100><loc_200>"
        "SALE<loc_100><loc_400><loc_400><loc_400><loc_400><loc_480><loc_100><loc_480>")
    assert ocr_crop_target([open_], (0, 30, 100, 100)) == ""  # no text in it: an empty target
    assert ocr_crop_target([open_, sale], (40, 0, 140, 100)) is None  # it cuts OPEN: no example
    assert ocr_crop_target([], (0, 0, 10, 10)) == ""


def test_ocr_crops_read_every_text_and_as_many_crops_without_any():
    import numpy as np

    from specialists.training.florence2_examples import Example
    from specialists.training.florence2_recipe import OCR_CROP, with_cropped_ocr

    image = np.arange(200 * 300 * 3, dtype=np.uint8).reshape(200, 300, 3)
    od = Example("a", "<OD>", "<OD>", "sign<loc_100><loc_100><loc_300><loc_300>"  # x 30-90, y 20-60
                                      "tree<loc_600><loc_600><loc_700><loc_800>tree<loc_800><loc_100><loc_900><loc_200>"
                                      "car<loc_500><loc_750><loc_550><loc_800>")
    ocr = Example("a", "<OCR_WITH_REGION>", "<OCR_WITH_REGION>",
                  "OPEN<loc_150><loc_200><loc_250><loc_200><loc_250><loc_250><loc_150><loc_250>")
    caption = Example("a", "<CAPTION>", "<CAPTION>", "a sign")
    examples, images, crops = with_cropped_ocr([caption, od, ocr], {"a": image}, margin=0.2, seed=0)
    extra = examples[3:]
    assert examples[:3] == [caption, od, ocr] and set(images) == {"a"} | crops == {"a"} | {e.image_id for e in extra}
    with_text = [e for e in extra if e.target]
    assert len(with_text) == 1 and len(extra) == 2  # the sign's crop, and one of the three without text
    assert all(e.task == e.prompt == "<OCR_WITH_REGION>" and OCR_CROP in e.image_id for e in extra)
    assert with_text[0].target.startswith("OPEN<loc_")
    # the sign's window (x 30-90, y 20-60 at its bins' centres): side 84 around its centre, cut at the top
    assert np.array_equal(images[with_text[0].image_id], image[0:83, 18:103])
    again, _, _ = with_cropped_ocr([caption, od, ocr], {"a": image}, margin=0.2, seed=0)
    assert [e.image_id for e in again] == [e.image_id for e in examples]  # seeded
    with pytest.raises(ValueError, match="crop_ocr reads the crops crop_regions makes"):
        Florence2TrainConfig(crop_ocr=True)


def test_read_lines_adds_a_plain_ocr_example_on_each_text_lines_tight_crop():
    import numpy as np

    from specialists.training.florence2_examples import Example
    from specialists.training.florence2_recipe import LINE_CROP, with_read_lines

    image = np.arange(200 * 300 * 3, dtype=np.uint8).reshape(200, 300, 3)
    # OPEN at bins x 150-250, y 200-250: x 45.15-75.15, y 40.1-50.1 (bin centres), 10 px high
    ocr = Example("a", "<OCR_WITH_REGION>", "<OCR_WITH_REGION>",
                  "OPEN<loc_150><loc_200><loc_250><loc_200><loc_250><loc_250><loc_150><loc_250>"
                  "EXIT<loc_900><loc_900><loc_990><loc_900><loc_990><loc_950><loc_900><loc_950>")
    caption = Example("a", "<CAPTION>", "<CAPTION>", "a sign")
    examples, images, lines = with_read_lines([caption, ocr], {"a": image}, margin=0.5, seed=0, views=3)
    extra = examples[2:]
    assert examples[:2] == [caption, ocr] and set(images) == {"a"} | lines == {"a"} | {e.image_id for e in extra}
    assert [e.target for e in extra] == ["OPEN"] * 3 + ["EXIT"] * 3  # each line, through three windows
    assert all(e.task == e.prompt == "<OCR>" and LINE_CROP in e.image_id for e in extra)
    # the first window is the line's box and half its height each way: x 40.15-80.15, y 35.1-55.1
    assert np.array_equal(images[extra[0].image_id], image[35:56, 40:81])
    assert not np.array_equal(images[extra[1].image_id], images[extra[0].image_id])  # a jittered view
    again, crops, _ = with_read_lines([caption, ocr], {"a": image}, margin=0.5, seed=0, views=3)
    assert again == examples and all(np.array_equal(crops[e.image_id], images[e.image_id]) for e in extra)  # seeded
    with pytest.raises(ValueError, match="read_lines must be None or a margin"):
        Florence2TrainConfig(read_lines=-0.1)


def test_corrupt_views_degrades_the_jittered_views_of_a_line_and_keeps_the_first_and_the_windows():
    import numpy as np

    from specialists.training.florence2_examples import Example
    from specialists.training.florence2_recipe import with_read_lines

    rng = np.random.default_rng(0)
    image = np.zeros((200, 300, 3), np.uint8)
    image[35:56, 40:81] = 255
    image[40:50, 50:70] = rng.integers(0, 60, (10, 20, 3))  # a dark word on a white sign
    ocr = Example("a", "<OCR_WITH_REGION>", "<OCR_WITH_REGION>",
                  "OPEN<loc_150><loc_200><loc_250><loc_200><loc_250><loc_250><loc_150><loc_250>")
    clean, clean_images, _ = with_read_lines([ocr], {"a": image}, margin=0.5, seed=0, views=4)
    worse, worse_images, _ = with_read_lines([ocr], {"a": image}, margin=0.5, seed=0, views=4, corrupt=True)
    assert clean == worse  # the same examples, targets and windows
    first, *views = [e.image_id for e in clean[1:]]
    assert np.array_equal(worse_images[first], clean_images[first])  # the line as it is, once
    for view in views:
        a, b = clean_images[view], worse_images[view]
        assert a.shape == b.shape and b.dtype == np.uint8 and not np.array_equal(a, b)
    again, again_images, _ = with_read_lines([ocr], {"a": image}, margin=0.5, seed=0, views=4, corrupt=True)
    assert all(np.array_equal(again_images[v], worse_images[v]) for v in views)  # seeded
    with pytest.raises(ValueError, match="corrupt_views corrupts the jittered views"):
        Florence2TrainConfig(corrupt_views=True, read_lines=0.3, ocr_views=1)
    with pytest.raises(ValueError, match="corrupt_views corrupts the jittered views"):
        Florence2TrainConfig(corrupt_views=True, ocr_views=4)


def test_corrupted_keeps_the_size_and_type_of_the_tiniest_crops():
    import numpy as np

    from specialists.training.florence2_recipe import corrupted

    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (2, 9, 3), (4, 40, 3)]:
        for _ in range(8):  # blur kernels wider than the crop, JPEG on less than a block
            out = corrupted(np.full(shape, 128, np.uint8), rng)
            assert out.shape == shape and out.dtype == np.uint8


def test_the_per_example_loss_counts_a_short_target_as_much_as_a_long_one():
    import torch
    import torch.nn.functional as F

    from specialists.training.florence2_train import per_example_loss

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    labels = torch.tensor([[1, 2, -100, -100, -100], [3, 4, 5, 6, 0], [-100] * 5])  # 2 tokens, 5 tokens, none
    token = lambda b, t: float(F.cross_entropy(logits[b, t][None], labels[b, t][None]))  # noqa: E731
    short = (token(0, 0) + token(0, 1)) / 2
    long = sum(token(1, t) for t in range(5)) / 5
    assert float(per_example_loss(logits, labels)) == pytest.approx((short + long) / 2, rel=1e-5)
    pooled = float(F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100))  # transformers' mean over tokens
    assert pooled == pytest.approx((2 * short + 5 * long) / 7, rel=1e-5)
