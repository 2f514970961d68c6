"""The synthetic world: deterministic, split without overlap, truth consistent with the pixels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pytest

from engine.dataset.sources import load_rgb
from engine.dataset.store import Store, StoreError
from engine.world.config import WorldConfig
from engine.world.describe import describe
from engine.world.make import World, make_world
from engine.world.sample import sample_scene
from engine.world.vocab import BACKGROUNDS, CATEGORIES, COLOURS, PATTERNS
from schemas import validate_table
from schemas.hashing import content_id
from schemas.masks import decode_rle


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"images": 0}, "at least 3 images"),
        ({"images": -5}, "at least 3 images"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"width": 10}, "width and height"),
        ({"min_objects": 0}, "min_objects"),
        ({"min_objects": 5, "max_objects": 2}, "min_objects"),
        ({"seed_fraction": 0.6, "gold_fraction": 0.5}, "room for the pool"),
        ({"jpeg_fraction": 1.5}, "jpeg_fraction"),
    ],
)
def test_bad_config(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        WorldConfig(**kwargs)


def test_the_world_draws_its_whole_vocabulary():
    """Every category, colour, pattern and background appears in 300 sampled scenes, and none
    dominates: a richer vocabulary on paper than in the images would be no vocabulary."""
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, WorldConfig(images=300)) for _ in range(300)]
    objects = [o for s in scenes for o in s.objects]
    for attribute, vocabulary in (("category", CATEGORIES), ("colour", COLOURS), ("pattern", PATTERNS)):
        seen = Counter(getattr(o, attribute) for o in objects)
        assert set(seen) == set(vocabulary), attribute
        assert max(seen.values()) < 3 * len(objects) / len(vocabulary), attribute  # no value dominates
    assert {s.background for s in scenes} == set(BACKGROUNDS)


def test_splits_are_disjoint_and_sized(small_world):
    config = small_world.config
    ids = {}
    for split in ("seed", "pool", "gold"):
        files = sorted(small_world.images(split).iterdir())
        assert len(files) == config.split_counts()[split]
        ids[split] = {content_id(p.read_bytes()) for p in files}
    assert not (ids["gold"] & ids["seed"]) and not (ids["gold"] & ids["pool"]) and not (ids["seed"] & ids["pool"])
    gold = Store(small_world.gold).read("images")
    truth = Store(small_world.truth).read("images")
    assert set(gold.column("image_id").to_pylist()) == ids["gold"]
    assert set(truth.column("image_id").to_pylist()) == ids["seed"] | ids["pool"]


def test_same_seed_same_world_whatever_the_workers(small_world, tmp_path):
    again = make_world(WorldConfig(images=30, seed=7), tmp_path / "again", workers=2)
    for split in ("seed", "pool", "gold"):
        a = [p.read_bytes() for p in sorted(small_world.images(split).iterdir())]
        b = [p.read_bytes() for p in sorted(again.images(split).iterdir())]
        assert a == b
    other = make_world(WorldConfig(images=30, seed=8), tmp_path / "other", workers=1)
    every = lambda w: {p.read_bytes() for p in (w.root / "images").rglob("*.*")}  # noqa: E731
    assert not every(other) & every(small_world)


def test_truth_is_valid_under_the_schemas(small_world):
    for root in (small_world.truth, small_world.gold):
        store = Store(root)
        sizes = store.image_sizes()
        for table in ("images", "texts", "regions", "triplets"):
            data = store.read(table)
            assert data.num_rows > 0
            assert validate_table(table, data, sizes) == [], table


def test_masks_and_boxes_match_the_pixels(small_world):
    store = Store(small_world.truth)
    images = {r["image_id"]: r["uri"] for r in store.read("images").to_pylist()}
    regions = store.read("regions")
    objects = regions.filter(pc.equal(regions.column("kind"), "object")).to_pylist()
    for row in objects[:40]:
        mask = decode_rle(row["mask"])
        ys, xs = np.nonzero(mask)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == row["box"]
        pixels = load_rgb(images[row["image_id"]])
        assert mask.shape == pixels.shape[:2]
        assert mask.sum() >= 30  # at least min_visible of a small object stays visible


def test_every_object_has_a_region_caption_and_signs_have_ocr(small_world):
    regions = Store(small_world.truth).read("regions").to_pylist()
    kinds = {k: [r for r in regions if r["kind"] == k] for k in ("object", "region_caption", "ocr")}
    assert len(kinds["object"]) == len(kinds["region_caption"])
    signs = [r for r in kinds["object"] if r["label"] == "sign"]
    assert len(kinds["ocr"]) == len(signs) > 0
    for ocr in kinds["ocr"]:
        assert ocr["label"].isupper() and len(ocr["quad"]) == 8


def test_phrases_point_into_their_text_and_at_their_objects(small_world):
    store = Store(small_world.truth)
    objects = {r["region_id"]: r for r in store.read("regions").to_pylist() if r["kind"] == "object"}
    for t in store.read("triplets").to_pylist():
        assert t["text"][t["span_start"]:t["span_end"]] == t["phrase"]
        assert objects[t["region_id"]]["label"] in t["phrase"]
        assert objects[t["region_id"]]["box"] == t["box"]


def test_description_lengths_follow_fld5b_ratio():
    config = WorldConfig(images=100, seed=3)
    lengths = {"brief": [], "detailed": [], "more_detailed": []}
    for i in range(100):
        rng = np.random.default_rng([3, i])
        for d in describe(sample_scene(rng, config), rng):
            lengths[d.granularity].append(len(d.text.split()))
    means = {k: np.mean(v) for k, v in lengths.items()}
    assert 6 <= means["brief"] <= 11, means  # FLD-5B: 7.95
    assert 24 <= means["detailed"] <= 38, means  # 31.65
    assert 55 <= means["more_detailed"] <= 85, means  # 70.53


def test_wording_varies():
    config = WorldConfig(images=40, seed=1)
    openers = set()
    for i in range(40):
        rng = np.random.default_rng([1, i])
        openers.add(" ".join(describe(sample_scene(rng, config), rng)[1].text.split()[:3]))
    assert len(openers) >= 3


def test_objects_per_image_within_bounds(small_world):
    regions = Store(small_world.truth).read("regions")
    objects = regions.filter(pc.equal(regions.column("kind"), "object"))
    counts = pc.value_counts(objects.column("image_id")).field("counts").to_pylist()
    assert min(counts) >= 1 and max(counts) <= small_world.config.max_objects


def test_overwrite_rules(small_world, tmp_path):
    with pytest.raises(StoreError, match="--overwrite"):
        make_world(WorldConfig(images=3), small_world.root)
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(StoreError, match="not a world made by fld"):
        make_world(WorldConfig(images=3), tmp_path, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_open_a_world(small_world, tmp_path):
    assert World.open(small_world.root).config == small_world.config
    with pytest.raises(StoreError, match="not a world"):
        World.open(tmp_path)


def test_a_world_is_reused_only_where_its_images_are(small_world, tmp_path):
    """A run's folder names its world's images by absolute paths: the same world is reused in
    place, another config is drawn again, and the world of a folder moved from elsewhere is
    refused up front, naming an image it lost."""
    import shutil

    from engine.world.make import existing_world

    assert existing_world(small_world.root, small_world.config).root == small_world.root
    assert existing_world(small_world.root, WorldConfig(images=30, seed=8)) is None
    assert existing_world(tmp_path / "none", small_world.config) is None
    config = WorldConfig(images=6, seed=3)
    make_world(config, tmp_path / "a" / "world", workers=1)
    shutil.move(tmp_path / "a", tmp_path / "b")
    with pytest.raises(StoreError, match=r"moved or copied from elsewhere.*new --out") as err:
        existing_world(tmp_path / "b" / "world", config)
    assert str(tmp_path / "a" / "world" / "images") in str(err.value)
