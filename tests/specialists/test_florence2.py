"""Florence-2: the parser agrees with transformers' post-processing, and the specialist runs a
tiny checkpoint end to end with scores from the generation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from filters.fusion import REREAD
from specialists.base import WeightsError
from specialists.florence2 import Florence2Config, Florence2Specialist, load_florence2
from specialists.florence2_build import build_processor, train_tokenizer
from specialists.florence2_parse import Generated, decode_bin, location_tokens, parse_florence2, quantize
from tests.batches import CAPTION, gold_batch, signed_batch

SIZE = (640, 480)


@pytest.fixture(scope="module")
def processor():
    return build_processor(train_tokenizer(["a red house", "two trees on a road"], vocab_size=300))


@pytest.mark.parametrize(
    "task, text",
    [
        ("<OD>", "house<loc_10><loc_20><loc_300><loc_400>car<loc_0><loc_0><loc_999><loc_999>"),
        ("<OD>", "two cars<loc_1><loc_2><loc_3><loc_4><loc_500><loc_501><loc_502><loc_503></s><pad><pad>"),
        ("<DENSE_REGION_CAPTION>", "a red striped house<loc_123><loc_234><loc_345><loc_456>"),
        ("<CAPTION_TO_PHRASE_GROUNDING>", "A red house<loc_10><loc_20><loc_300><loc_400>two trees<loc_500><loc_500><loc_600><loc_700><loc_700><loc_500><loc_800><loc_700>"),
        ("<OCR_WITH_REGION>", "OPEN<loc_10><loc_20><loc_300><loc_20><loc_300><loc_400><loc_10><loc_400>SALE 50<loc_500><loc_500><loc_900><loc_500><loc_900><loc_600><loc_500><loc_600>"),
        ("<REGION_PROPOSAL>", "<loc_10><loc_20><loc_300><loc_400><loc_1><loc_2><loc_3><loc_4>"),
        ("<CAPTION>", "<s>A red house next to a tree.</s>"),
    ],
)
def test_parser_agrees_with_transformers(processor, task, text):
    ours = parse_florence2(text, task, SIZE)
    theirs = processor.post_process_generation(text=text, task=task, image_size=SIZE)[task]
    if isinstance(theirs, str):
        assert [i.text for i in ours] == [theirs]
        return
    if "quad_boxes" in theirs:
        assert [i.text for i in ours] == theirs["labels"]
        assert np.allclose([i.quad for i in ours], theirs["quad_boxes"], atol=1.0)
        return
    assert [i.text for i in ours] == theirs["labels"] or task == "<REGION_PROPOSAL>"
    # transformers decodes to the bin centre too, then truncates to whole pixels
    assert np.allclose([i.box for i in ours], theirs["bboxes"], atol=1.0)
    assert (np.floor([i.box for i in ours]) == np.array(theirs["bboxes"])).all()


@pytest.mark.parametrize("value, size, bin_", [(0, 640, 0), (639.9, 640, 999), (640, 640, 999), (700, 640, 999),
                                               (-3, 640, 0), (320, 640, 500), (0.64, 640, 1)])
def test_quantize_never_emits_loc_1000(value, size, bin_):
    assert quantize(value, size) == bin_


def test_decode_at_bin_centre_clamped():
    assert decode_bin(0, 1000) == 0.5 and decode_bin(999, 1000) == 999.5
    assert location_tokens([0, 0, 640, 480], SIZE) == "<loc_0><loc_0><loc_999><loc_999>"


def test_scores_come_from_token_probabilities():
    g = Generated(("house", "<loc_1>", "<loc_2>", "<loc_3>", "<loc_4>", "</s>"), (0.5, 0.9, 0.8, 0.7, 0.6, 1.0))
    item = parse_florence2(g, "<OD>", SIZE)[0]
    assert item.score == pytest.approx(0.75) and item.phrase_score == pytest.approx(0.5)
    assert parse_florence2("house<loc_1><loc_2><loc_3><loc_4>", "<OD>", SIZE)[0].score is None


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown Florence-2 task"):
        parse_florence2("x", "<NOPE>", SIZE)


def test_specialist_end_to_end(tiny_florence2, small_world):
    batch = gold_batch(small_world, 3)
    tasks = ("<CAPTION>", "<OD>", "<OCR_WITH_REGION>", "<CAPTION_TO_PHRASE_GROUNDING>", "<REGION_TO_DESCRIPTION>")
    specialist = Florence2Specialist(Florence2Config(str(tiny_florence2), tasks=tasks, max_new_tokens=40, batch_size=2))
    out = specialist(batch)
    texts, regions, triplets = out["texts"], out["regions"], out["triplets"]
    assert texts.num_rows == 3 and set(texts.column("text").to_pylist()) == {CAPTION}
    kinds = regions.column("kind").to_pylist()
    assert kinds.count("object") == 6 and kinds.count("ocr") == 3
    objects = [r for r in regions.to_pylist() if r["kind"] == "object"]
    assert {r["label"] for r in objects} == {"house", "tree"}
    for r in regions.to_pylist() + texts.to_pylist():
        assert r["score_source"] == "model_probability" and 0.0 < r["score"] <= 1.0
        assert r["specialist"] == "florence2" and len(r["specialist_version"]) == 16
    w, h = batch.sizes[batch.image_ids[0]]
    house = next(r for r in objects if r["label"] == "house")
    assert house["box"] == pytest.approx([decode_bin(100, w), decode_bin(150, h), decode_bin(400, w), decode_bin(600, h)])
    assert len({r["score"] for r in objects}) > 1  # scores differ: they come from the generation
    assert kinds.count("region_caption") > 0  # <REGION_TO_DESCRIPTION> on the prompt regions
    for t in triplets.to_pylist():
        assert t["text"][t["span_start"]:t["span_end"]] == t["phrase"]


@pytest.mark.parametrize("size", [None, 128])
def test_region_descriptions_on_crops_see_each_box_on_its_own_crop(tiny_florence2, small_world, monkeypatch, size):
    """With a ``region_margin`` each prompt box is described on its square crop, with its tokens in
    the crop, fed at ``region_size`` when given; the rows keep the box in the image's pixels."""
    from schemas.geometry import box_in_window, square_window
    from specialists.florence2 import REGION_TO_DESCRIPTION

    batch = gold_batch(small_world, 2)
    specialist = Florence2Specialist(Florence2Config(str(tiny_florence2), tasks=(REGION_TO_DESCRIPTION,),
                                                     max_new_tokens=12, batch_size=4, region_margin=0.2,
                                                     region_size=size))
    specialist.load()
    calls = []
    generate = specialist.generate
    monkeypatch.setattr(specialist, "generate", lambda images, prompts, *rest, **kw: calls.append((images, prompts, rest, kw))
                        or generate(images, prompts, *rest, **kw))
    encoded = []
    encode = specialist.encode
    monkeypatch.setattr(specialist, "encode", lambda images, processor=None: encoded.append(
        (processor or specialist.processor).image_processor.size["height"]) or encode(images, processor))
    out = specialist(batch)["regions"]
    (images, prompts, rest, kw), = calls
    boxes = [r for r in batch.regions.to_pylist() if r["kind"] == "object"]
    assert len(images) == len(prompts) == len(boxes) > 0 and len(rest[0]) == len(boxes)  # the crops are the images
    assert encoded == [size or specialist.processor.image_processor.size["height"]]  # crops only, at their size
    for crop, prompt, region in zip(images, prompts, boxes):
        k = batch.image_ids.index(region["image_id"])
        window = square_window(region["box"], batch.sizes[region["image_id"]], 0.2)
        assert np.array_equal(crop, batch.images[k][window[1]:window[3], window[0]:window[2]])
        assert prompt == REGION_TO_DESCRIPTION + location_tokens(box_in_window(region["box"], window),
                                                                 (window[2] - window[0], window[3] - window[1]))
    assert out.num_rows > 0 and set(out.column("kind").to_pylist()) == {"region_caption"}
    by_id = {r["region_id"]: r["box"] for r in boxes}
    assert all(r["box"] == pytest.approx(by_id[r["region_id"].removesuffix("-f2cap")]) for r in out.to_pylist())
    with pytest.raises(ValueError, match="region_margin"):
        Florence2Config(str(tiny_florence2), region_margin=-1.0)
    with pytest.raises(ValueError, match="region_size needs a region_margin"):
        Florence2Config(str(tiny_florence2), region_size=112)


def test_a_resized_processor_counts_the_visual_tokens_of_its_size(tiny_florence2):
    from specialists.florence2 import resized

    model, processor = load_florence2(str(tiny_florence2))
    small = resized(processor, 128)
    image = np.zeros((40, 60, 3), np.uint8)
    assert small.image_processor([image], return_tensors="pt")["pixel_values"].shape[-2:] == (128, 128)
    features = model.get_image_features(small.image_processor([image], return_tensors="pt")["pixel_values"]).pooler_output
    assert features.shape[1] == small.num_image_tokens != processor.num_image_tokens
    assert processor.image_processor.size["height"] == 224  # the original is untouched
    with pytest.raises(ValueError, match="multiple of its vision stride"):
        resized(processor, 100)


def test_empty_batch(tiny_florence2):
    from specialists.base import Batch

    out = Florence2Specialist(Florence2Config(str(tiny_florence2)))(Batch([], []))
    assert all(t.num_rows == 0 for t in out.values())


@pytest.mark.parametrize("damage", ["missing", "not_a_checkpoint", "other_model", "truncated", "other_tokenizer"])
def test_bad_checkpoints_are_named(tiny_florence2, tmp_path, damage):
    target = tmp_path / "ckpt"
    if damage != "missing":
        shutil.copytree(tiny_florence2, target)
    if damage == "not_a_checkpoint":
        (target / "config.json").unlink()
    elif damage == "other_model":
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, "model_type": "bart", "architectures": ["BartModel"]}))
    elif damage == "truncated":
        weights = next(target.glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "other_tokenizer":
        build_processor(train_tokenizer(["completely other words"] * 50, vocab_size=300)).save_pretrained(target)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(target)
        tokenizer.add_tokens([f"extra{i}" for i in range(2000)])
        tokenizer.save_pretrained(target)
    with pytest.raises(WeightsError, match=str(target) if damage != "other_tokenizer" else "different tokenizer"):
        load_florence2(str(target))


def test_a_text_answer_ends_at_its_first_location_token():
    """A reading or description that runs on into another task's regions keeps its words only (a
    reader once wrote "POST<loc_444>..." into the data)."""
    quad = "<loc_444><loc_453><loc_641><loc_453><loc_641><loc_509><loc_509><loc_383>"
    assert [i.text for i in parse_florence2(f"POST{quad}", "<OCR>", SIZE)] == ["POST"]
    assert parse_florence2(quad, "<OCR>", SIZE) == []
    assert [i.text for i in parse_florence2("A red house.", "<CAPTION>", SIZE)] == ["A red house."]


def test_malformed_labels_are_no_labels():
    boxes = "<loc_10><loc_20><loc_30><loc_40>"
    text = f"loc_662>star{boxes}starstarstarstar{boxes}car{boxes}"
    assert [i.text for i in parse_florence2(text, "<OD>", SIZE)] == ["car"]
    assert [i.text for i in parse_florence2(f"red red car{boxes}", "<OD>", SIZE)] == ["red red car"]


def test_one_vision_pass_per_image_serves_every_prompt(tiny_florence2, small_world):
    """Prompts that share an image's features (``of_image``) generate what encoding that image for
    each prompt alone generates, and each prompt reads its own image's features."""
    batch = gold_batch(small_world, 3)
    specialist = Florence2Specialist(Florence2Config(str(tiny_florence2), max_new_tokens=12, batch_size=2))
    specialist.load()
    prompts, of_image = ["<CAPTION>", "<OD>", "<CAPTION>", "<OD>", "<CAPTION>"], [2, 0, 1, 2, 0]
    shared = specialist.generate(batch.images, prompts, specialist.encode(batch.images), of_image)
    alone = [specialist.generate([batch.images[k]], [p])[0] for p, k in zip(prompts, of_image)]
    assert [g.pieces for g in shared] == [g.pieces for g in alone]
    for s, a in zip(shared, alone):
        assert s.probs == pytest.approx(a.probs, abs=1e-5)
    captions = {k: shared[i].probs for i, k in enumerate(of_image) if prompts[i] == "<CAPTION>"}
    assert captions[0] != pytest.approx(captions[2], abs=1e-6)  # the images differ, so must what is read


def test_reading_on_crops_places_each_text_back_in_its_image_and_drops_cut_words(tiny_florence2, small_world, monkeypatch):
    """With ``region_ocr`` the model reads each prompt box's crop (the same crops, one vision pass,
    as its region captions); a text's box moves back into the image's pixels, and one that touches a
    side the crop cut from its image (maybe part of a word) is dropped."""
    from schemas.geometry import square_window
    from specialists.florence2 import OCR, REGION_TO_DESCRIPTION

    batch = gold_batch(small_world, 2)
    specialist = Florence2Specialist(Florence2Config(str(tiny_florence2), tasks=(REGION_TO_DESCRIPTION, OCR),
                                                     max_new_tokens=12, batch_size=4, region_margin=0.2,
                                                     region_size=128, region_ocr=True))
    assert specialist.needs == ("regions",) and specialist.produces == ("regions",)
    specialist.load()
    read = "OPEN" + "".join(f"<loc_{b}>" for b in (200, 400, 600, 400, 600, 500, 200, 500)) + \
        "EN" + "".join(f"<loc_{b}>" for b in (0, 600, 300, 600, 300, 700, 0, 700))  # "EN" at the crop's left side
    generate, encoded = specialist.generate, []
    monkeypatch.setattr(specialist, "generate", lambda images, prompts, *rest, **kw: (
        [Generated((read,), (0.9,))] * len(prompts) if prompts[0] == OCR else generate(images, prompts, *rest, **kw)))
    encode = specialist.encode
    monkeypatch.setattr(specialist, "encode", lambda images, processor=None: encoded.append(len(images)) or encode(images, processor))
    out = specialist(batch)["regions"].to_pylist()
    boxes = [r for r in batch.regions.to_pylist() if r["kind"] == "object"]
    assert encoded == [len(boxes)]  # one vision pass over the crops serves both tasks
    read = [r for r in out if r["kind"] == "ocr"]
    assert {r["kind"] for r in out} == {"ocr", "region_caption"}
    expected = []
    for region in boxes:
        w, h = batch.sizes[region["image_id"]]
        x0, y0, x1, y1 = square_window(region["box"], (w, h), 0.2)
        cw, ch = x1 - x0, y1 - y0
        expected.append((region["image_id"], "OPEN", pytest.approx([x0 + decode_bin(200, cw), y0 + decode_bin(400, ch),
                                                            x0 + decode_bin(600, cw), y0 + decode_bin(500, ch)])))
        if x0 == 0:  # the crop's left side is the image's: "EN" is a whole word there
            expected.append((region["image_id"], "EN", pytest.approx([decode_bin(0, cw), y0 + decode_bin(600, ch),
                                                                decode_bin(300, cw), y0 + decode_bin(700, ch)])))
    assert sorted(((r["image_id"], r["label"], r["box"]) for r in read), key=lambda t: (t[0], t[2][0], t[2][1])) == \
        sorted(expected, key=lambda t: (t[0], t[2].expected[0], t[2].expected[1]))
    assert len(read) < 2 * len(boxes)  # some crop cut "EN" from its image, and it was dropped there
    assert all(len(r["quad"]) == 8 and r["quad"][0] == pytest.approx(r["box"][0]) for r in read)
    with pytest.raises(ValueError, match="region_ocr reads the crops"):
        Florence2Config(str(tiny_florence2), tasks=(OCR,), region_ocr=True)


def test_reading_lines_reads_each_text_region_again_on_its_tight_crop(tiny_florence2, small_world, monkeypatch):
    """With ``<OCR>`` and a ``read_margin`` the model reads each earlier ``ocr`` region (another
    reader's text line) on its tight crop, in one vision pass over the crops, and gives a row with
    that region's box and quad and its own text; object regions are not read, and a crop it reads
    nothing on gives no row."""
    from specialists.florence2 import READ, line_crop

    batch = signed_batch(small_world, 3)
    lines = [r for r in batch.regions.to_pylist() if r["kind"] == "ocr"]
    assert len(lines) >= 2 and any(r["kind"] == "object" for r in batch.regions.to_pylist())  # one read, one not
    specialist = Florence2Specialist(Florence2Config(str(tiny_florence2), tasks=(READ,), max_new_tokens=8,
                                                     batch_size=4, read_margin=0.3))
    assert specialist.needs == ("regions",) and specialist.produces == ("regions",)
    specialist.load()
    seen, encoded = [], []
    said = iter(["STOP", ""] * len(lines))  # the second line (if any) reads as nothing
    monkeypatch.setattr(specialist, "generate", lambda images, prompts, *rest, **kw: seen.extend(images) or [
        Generated((next(said), "</s>"), (0.8, 0.9)) for _ in prompts])
    encode = specialist.encode
    monkeypatch.setattr(specialist, "encode", lambda images, processor=None: encoded.append(len(images)) or encode(images, processor))
    out = specialist(batch)["regions"].to_pylist()
    assert encoded == [len(lines)]  # the crops only: no pass over the whole images
    index = {i: k for k, i in enumerate(batch.image_ids)}
    assert [c.shape for c in seen] == [line_crop(batch.images[index[r["image_id"]]], r["box"], 0.3).shape for r in lines]
    read = [r for k, r in enumerate(lines) if k % 2 == 0]
    assert [(r["region_id"], r["kind"], r["label"], r["specialist"]) for r in out] == \
        [(f"{r['region_id']}{REREAD}", "ocr", "STOP", "florence2") for r in read]
    assert [(o["box"], o["quad"]) for o in out] == [(pytest.approx(r["box"]), pytest.approx(r["quad"])) for r in read]
    assert all(o["score"] == pytest.approx(0.8) for o in out)
    with pytest.raises(ValueError, match="reads text lines on crops of a read_margin"):
        Florence2Config(str(tiny_florence2), tasks=(READ,))
    with pytest.raises(ValueError, match="reads text lines on crops of a read_margin"):
        Florence2Config(str(tiny_florence2), tasks=("<OD>",), read_margin=0.3)


def test_each_task_decodes_with_its_own_beam_width(tiny_florence2, small_world, monkeypatch):
    batch = gold_batch(small_world, 2)
    specialist = Florence2Specialist(Florence2Config(str(tiny_florence2), tasks=("<CAPTION>", "<OD>"), max_new_tokens=40,
                                                     task_beams={"<CAPTION>": 3}))
    specialist.load()
    widths = []
    generate = specialist.model.generate
    monkeypatch.setattr(specialist.model, "generate", lambda **kw: widths.append(kw["num_beams"]) or generate(**kw))
    out = specialist(batch)
    assert widths == [3, 1]  # one batch per task: the brief descriptions with 3 beams, <OD> greedy
    assert out["texts"].num_rows == 2 and set(out["texts"].column("text").to_pylist()) == {CAPTION}
    assert all(0.0 < s <= 1.0 for s in out["texts"].column("score").to_pylist())
    with pytest.raises(ValueError, match="task_beams"):
        Florence2Config(str(tiny_florence2), task_beams={"<CAPTION>": 0})
