"""YOLO, SAM, GrabCut, RapidOCR and the label grounder on tiny models and world images, the
contract's bad inputs, and a run with the network blocked."""

from __future__ import annotations

import socket

import numpy as np
import pyarrow as pa
import pytest

from schemas import validate_table
from schemas.masks import encode_rle, rle_iou
from specialists.base import Batch, WeightsError, as_rgb, weights_version
from specialists.registry import build
from specialists.sam import GrabCutConfig, GrabCutSegmenter, SamConfig, SamSegmenter
from specialists.yolo import YoloConfig, YoloDetector
from tests.batches import gold_batch, signed_batch
from tests.rows import table_of, valid_row


def detector(weights, **kw):
    return YoloDetector(YoloConfig(weights=str(weights), imgsz=160, conf=0.0, max_det=10, **kw))


def test_yolo_batched_across_images_with_real_scores(yolo_weights, small_world):
    batch = gold_batch(small_world, 3, with_prompts=False)
    out = detector(yolo_weights)(batch)["regions"]
    assert validate_table("regions", out, batch.sizes) == []
    assert set(out.column("image_id").to_pylist()) == set(batch.image_ids)
    scores = out.column("score").to_numpy()
    assert (scores >= 0).all() and (scores <= 1).all() and len(set(scores.tolist())) > 1
    assert set(out.column("specialist_version").to_pylist()) == {weights_version(yolo_weights)}


def test_yolo_leaves_the_process_thread_count_as_it_was(yolo_weights, small_world):
    """ultralytics sets torch's threads for the whole process when it picks a device (to the cores
    less one): every later model of the process ran on one core of two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        yolo = detector(yolo_weights)
        yolo.load()
        during = []
        yolo.model.add_callback("on_predict_batch_start", lambda _: during.append(torch.get_num_threads()))
        yolo(gold_batch(small_world, 1, with_prompts=False))
        assert during == [3]  # it computes on the process's threads, not on ultralytics' own count
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_yolo_mixed_sizes_tiny_and_huge_images(yolo_weights):
    images = [np.zeros((1, 1, 3), np.uint8), np.full((10_000, 10_000), 128, np.uint8),
              np.random.default_rng(0).integers(0, 255, (90, 300, 3), dtype=np.uint8)]
    batch = Batch(["one", "huge", "wide"], images)
    assert batch.images[1].shape == (10_000, 10_000, 3)  # grayscale became RGB
    out = detector(yolo_weights)(batch)["regions"]
    assert validate_table("regions", out, batch.sizes) == []


@pytest.mark.parametrize("damage, fragment", [("missing", "not found at"), ("truncated", "cannot load YOLO weights"),
                                              ("sam", "cannot load YOLO weights"), ("text", "cannot load YOLO weights")])
def test_yolo_bad_weights(yolo_weights, tiny_sam, tmp_path, damage, fragment):
    path = tmp_path / "w.pt"
    if damage == "truncated":
        path.write_bytes(yolo_weights.read_bytes()[:5000])
    elif damage == "sam":
        path.write_bytes(tiny_sam.read_bytes())
    elif damage == "text":
        path.write_text("not weights")
    with pytest.raises(WeightsError, match=fragment) as err:
        detector(path).load()
    assert str(path) in str(err.value) and ".pt" in str(err.value)


def test_sam_masks_for_prompt_boxes_with_predicted_iou(tiny_sam, small_world):
    batch = gold_batch(small_world, 2)
    out = SamSegmenter(SamConfig(checkpoint=str(tiny_sam), model_type="tiny"))(batch)["masks"]
    objects = batch.regions.filter(pa.compute.equal(batch.regions.column("kind"), "object"))
    assert out.num_rows == objects.num_rows
    assert out.column("region_id").to_pylist() == objects.column("region_id").to_pylist()
    assert out.column("mask").null_count == 0
    scores = out.column("mask_score").to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert set(out.column("mask_specialist").to_pylist()) == {f"sam@{weights_version(tiny_sam)}"}
    assert validate_table("regions", out, batch.sizes) == []


@pytest.mark.parametrize("damage, fragment", [("missing", "not found"), ("truncated", "cannot read SAM checkpoint"),
                                              ("wrong_type", "does not fit a SAM vit_b")])
def test_sam_bad_checkpoints(tiny_sam, tmp_path, damage, fragment):
    path = tmp_path / "sam.pth"
    if damage == "truncated":
        path.write_bytes(tiny_sam.read_bytes()[:2000])
    elif damage == "wrong_type":
        path.write_bytes(tiny_sam.read_bytes())  # a tiny checkpoint named as vit_b
    with pytest.raises(WeightsError, match=fragment):
        SamSegmenter(SamConfig(checkpoint=str(path), model_type="vit_b")).load()
    with pytest.raises(ValueError, match="model_type must be one of"):
        SamConfig(model_type="vit_x")


def test_grabcut_segments_world_objects_well(small_world):
    batch = gold_batch(small_world, 2)
    truth = {r["region_id"]: r["mask"] for r in batch.regions.to_pylist()}
    out = GrabCutSegmenter()(batch)["masks"].to_pylist()
    ious = [rle_iou([r["mask"]], [truth[r["region_id"]]])[0, 0] for r in out if r["mask"]]
    assert len(ious) >= len(out) - 1 and np.mean(ious) > 0.8
    assert all(r["mask_score"] is None for r in out)  # GrabCut has no confidence: none is made up


def test_ocr_reads_world_signs(small_world):
    batch = signed_batch(small_world)
    truth = {r["label"] for r in batch.regions.to_pylist() if r["kind"] == "ocr"}
    assert truth  # the batch is chosen to hold signs
    out = build("rapidocr")(batch)["regions"]
    assert validate_table("regions", out, batch.sizes) == []
    assert truth & set(out.column("label").to_pylist())
    assert out.column("quad").null_count == 0


def test_ocr_reads_large_images_in_their_own_coordinates(small_world):
    """An image past the detector's size limit (960 px on the long side) is scaled down for
    detection only: its words are read, with boxes in the full image's pixels."""
    import cv2

    batch = signed_batch(small_world)
    small = build("rapidocr")(batch)["regions"].to_pylist()
    large = Batch(batch.image_ids, [cv2.resize(a, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC) for a in batch.images])
    out = build("rapidocr")(large)["regions"]
    assert validate_table("regions", out, large.sizes) == []
    read = {(r["image_id"], r["label"]): r["box"] for r in out.to_pylist()}
    both = [(r["box"], read[(r["image_id"], r["label"])]) for r in small if (r["image_id"], r["label"]) in read]
    assert both  # the same words are read at four times the size
    for box, box4 in both:
        assert np.allclose(np.array(box4) / 4, box, atol=6)


@pytest.mark.parametrize("bad", [{"det_limit_type": "long"}, {"det_limit_side_len": 0}, {"min_score": 2.0}])
def test_ocr_config_refuses_bad_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build("rapidocr", **bad)


def test_label_grounder_links_phrases_to_matching_detections(small_world):
    batch = gold_batch(small_world, 3)
    regions = batch.regions.filter(pa.compute.equal(batch.regions.column("kind"), "object"))
    scored = regions.set_column(regions.schema.get_field_index("score"), "score",
                                pa.array(np.linspace(0.5, 0.9, regions.num_rows), pa.float32()))
    scored = scored.set_column(scored.schema.get_field_index("score_source"), "score_source",
                               pa.array(["model_probability"] * regions.num_rows))
    out = build("label-grounder")(Batch(batch.image_ids, batch.images, regions=scored, texts=batch.texts))["triplets"]
    assert out.num_rows > 0
    assert validate_table("triplets", out, batch.sizes) == []
    labels = {r["region_id"]: r["label"] for r in scored.to_pylist()}
    for t in out.to_pylist():
        assert labels[t["region_id"]] in t["phrase"].lower() or labels[t["region_id"]] + "s" in t["phrase"].lower()
        assert 0.5 <= t["score"] <= 0.9


def _cars(image: np.ndarray, *regions: dict, texts: tuple[str, ...]) -> Batch:
    return Batch(["img0"], [image], regions=table_of("regions", [valid_row("regions", label="car", **r) for r in regions]),
                 texts=table_of("texts", [valid_row("texts", text_id=f"t{k}", text=t) for k, t in enumerate(texts)]))


def _picked(batch: Batch, **options) -> dict[tuple[str, str], list[str]]:
    picked: dict[tuple[str, str], list[str]] = {}
    for t in build("label-grounder", **options)(batch)["triplets"].to_pylist():
        picked.setdefault((t["text_id"], t["phrase"]), []).append(t["region_id"])
    return {k: sorted(v) for k, v in picked.items()}


def _red_and_blue_cars() -> Batch:
    """A red car (left, scored highest), a blue car (right) and, below, a bluer car scored far lower."""
    image = np.full((60, 80, 3), 128, np.uint8)
    image[5:35, 5:35] = (220, 30, 30)
    image[5:35, 45:75] = (30, 40, 220)
    image[40:55, 30:45] = (0, 0, 255)
    return _cars(image, dict(region_id="red", box=[5.0, 5.0, 35.0, 35.0], mask=None, score=0.9),
                 dict(region_id="blue", box=[45.0, 5.0, 75.0, 35.0], mask=None, score=0.8),
                 dict(region_id="weak", box=[30.0, 40.0, 45.0, 55.0], mask=None, score=0.3),
                 texts=("A blue car.", "A red car.", "A car.", "The Blue car and two cars."))


def test_label_grounder_picks_a_singular_phrases_box_by_its_colour_word():
    picked = _picked(_red_and_blue_cars())
    assert picked[("t0", "A blue car")] == ["blue"]  # not the bluer one scored under 0.7 of the best
    assert picked[("t1", "A red car")] == ["red"]
    assert picked[("t2", "A car")] == ["red"]  # no colour word: the best-scored
    assert picked[("t3", "The Blue car")] == ["blue"]
    assert picked[("t3", "two cars")] == ["blue", "red", "weak"]  # a plural phrase takes every match
    assert _picked(_red_and_blue_cars(), colour_min_score=0.0)[("t0", "A blue car")] == ["weak"]


def test_label_grounder_reads_a_regions_colour_from_its_mask():
    """A green car with a blue patch at its centre (its mask holds the green only) beside a blue car:
    by the centre of its box it is as blue as the other, by its mask it is green."""
    image = np.full((40, 80, 3), 128, np.uint8)
    image[5:35, 5:35] = (30, 160, 60)
    image[13:28, 13:28] = (30, 40, 220)
    image[5:35, 45:75] = (30, 40, 220)
    green = np.zeros((40, 80), bool)
    green[5:35, 5:35] = True
    green[13:28, 13:28] = False
    batch = _cars(image, dict(region_id="green", box=[5.0, 5.0, 35.0, 35.0], mask=encode_rle(green), score=0.9),
                  dict(region_id="blue", box=[45.0, 5.0, 75.0, 35.0], mask=None, score=0.8),
                  texts=("A blue car.", "A green car."))
    picked = _picked(batch)
    assert picked[("t0", "A blue car")] == ["blue"]
    assert picked[("t1", "A green car")] == ["green"]


def test_a_mask_of_another_size_or_a_broken_box_does_not_stop_the_label_grounder():
    batch = _red_and_blue_cars()
    regions = batch.regions.to_pylist()
    regions[0]["mask"] = encode_rle(np.ones((7, 9), bool))  # the red car's mask is of another image
    regions[2]["box"] = [float("nan"), 40.0, 45.0, 55.0]
    batch = _cars(batch.images[0], *({k: r[k] for k in ("region_id", "box", "mask", "score")} for r in regions),
                  texts=("A blue car.", "A red car."))
    picked = _picked(batch)
    assert picked[("t0", "A blue car")] == ["blue"]
    assert picked[("t1", "A red car")] == ["red"]


def test_label_grounder_without_colour_picks_the_best_scored():
    assert _picked(_red_and_blue_cars(), by_colour=False)[("t0", "A blue car")] == ["red"]
    with pytest.raises(ValueError, match="colour_min_score must be within"):
        build("label-grounder", colour_min_score=1.5)


def test_registry_and_contract_errors():
    with pytest.raises(ValueError, match="unknown specialist 'dino'; known: yolo"):
        build("dino")
    with pytest.raises(ValueError, match="bad options for specialist 'yolo'"):
        build("yolo", weights="x.pt", nonsense=1)
    with pytest.raises(ValueError, match="expected height x width x 3"):
        as_rgb(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        as_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="2 image ids for 1 images"):
        Batch(["a", "b"], [np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(ValueError, match="batch_size"):
        YoloConfig(batch_size=0)


def test_empty_batches(yolo_weights):
    for specialist in (detector(yolo_weights), GrabCutSegmenter(), build("rapidocr")):
        assert all(t.num_rows == 0 for t in specialist(Batch([], [])).values())


def test_no_specialist_touches_the_network(yolo_weights, tiny_sam, tiny_florence2, small_world, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    batch = gold_batch(small_world, 2)
    for specialist in (detector(yolo_weights), SamSegmenter(SamConfig(checkpoint=str(tiny_sam), model_type="tiny")),
                       GrabCutSegmenter(), build("rapidocr"), build("label-grounder"),
                       build("florence2", checkpoint=str(tiny_florence2), tasks=("<CAPTION>", "<OD>"), max_new_tokens=20)):
        specialist(batch)
    assert attempts == []


def test_prompts_are_limited_to_the_batch_images(small_world):
    whole = gold_batch(small_world, 4)
    part = Batch(whole.image_ids[:1], whole.images[:1], regions=whole.regions, texts=whole.texts)
    assert set(part.prompts("regions").column("image_id").to_pylist()) == {whole.image_ids[0]}
    out = GrabCutSegmenter()(part)["masks"]
    assert set(out.column("image_id").to_pylist()) == {whole.image_ids[0]}


def test_a_grabcut_mask_depends_on_its_box_alone(small_world):
    """Not on the boxes segmented before it: a gate's measurement and a round batch them differently."""
    batch = gold_batch(small_world, 4)
    masks = lambda b: {r["region_id"]: r["mask"] for r in GrabCutSegmenter()(b)["masks"].to_pylist()}  # noqa: E731
    together = masks(batch)
    last = batch.image_ids[-1]
    alone = masks(Batch([last], batch.images[-1:], regions=batch.regions))
    assert alone and all(together[k] == m for k, m in alone.items())
    assert masks(batch) == together


def test_grabcut_masks_are_the_same_on_one_thread_and_on_several(small_world):
    batch = gold_batch(small_world, 4)
    masks = {}
    for threads in (1, 3):
        segmenter = GrabCutSegmenter()
        segmenter.threads = threads
        masks[threads] = segmenter(batch)["masks"].to_pylist()
    assert masks[1] == masks[3] and any(r["mask"] for r in masks[1])


def test_grabcut_denoises_before_it_models_colours():
    """Sensor noise misleads GrabCut's colour models into no mask at all; the bilateral filter
    before it recovers the object."""
    rng = np.random.default_rng(0)
    image = np.full((120, 160, 3), (90, 140, 90), np.uint8)
    yy, xx = np.mgrid[:120, :160]
    disc = (yy - 60) ** 2 + (xx - 80) ** 2 <= 22 ** 2
    image[disc] = (150, 110, 80)
    noisy = np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    box = [56.0, 36.0, 104.0, 84.0]
    regions = table_of("regions", [valid_row("regions", image_id="n", region_id="r", box=box, label="disc")])
    batch = Batch(["n"], [noisy], regions=regions)
    masks = {d: GrabCutSegmenter(GrabCutConfig(denoise=d))(batch)["masks"].column("mask")[0].as_py() for d in (0, 9)}
    assert masks[9] is not None and rle_iou([masks[9]], [encode_rle(disc)])[0, 0] > 0.9
    assert masks[0] is None or rle_iou([masks[0]], [encode_rle(disc)])[0, 0] < 0.5
    with pytest.raises(ValueError, match="denoise must be a filter diameter"):
        GrabCutConfig(denoise=-1)


def test_grabcut_box_over_the_whole_image_gets_no_mask(small_world):
    batch = gold_batch(small_world, 1)
    w, h = batch.sizes[batch.image_ids[0]]
    regions = batch.regions.slice(0, 1)
    regions = regions.set_column(regions.schema.get_field_index("box"), "box",
                                 pa.array([[0.0, 0.0, float(w), float(h)]], regions.schema.field("box").type))
    out = GrabCutSegmenter()(Batch(batch.image_ids, batch.images, regions=regions))["masks"]
    assert out.num_rows == 1 and out.column("mask")[0].as_py() is None
