"""Domain shift: the seed domain stays today's world, the target domain (pool, gold) differs in
named, validated ways, and the truth stays exact in both."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.store import Store
from engine.evaluation.gold import GoldGuard
from engine.world.config import WorldConfig
from engine.world.make import World, make_world
from engine.world.shift import SHIFTS, Shift, held_out_colours, parse_overrides, shift_named


def _files(world: World, split: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(world.images(split).iterdir())}


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    config = WorldConfig(images=80, seed=4, seed_gold_fraction=0.2, shift=shift_named("field"))
    return make_world(config, tmp_path_factory.mktemp("shifted"), workers=1)


def test_shift_none_draws_the_same_images_as_a_world_without_one(tmp_path):
    plain = make_world(WorldConfig(images=24, seed=4), tmp_path / "a", workers=1)
    none = make_world(WorldConfig(images=24, seed=4, shift=Shift()), tmp_path / "b", workers=1)
    for split in ("seed", "pool", "gold"):
        assert _files(plain, split) == _files(none, split)


def test_the_target_domain_is_captured_differently(tmp_path, shifted):
    same = make_world(WorldConfig(images=80, seed=4, seed_gold_fraction=0.2), tmp_path / "plain", workers=1)
    stem = lambda files: {name.split(".")[0]: data for name, data in files.items()}  # noqa: E731
    pool, plain = stem(_files(shifted, "pool")), stem(_files(same, "pool"))
    assert pool.keys() == plain.keys() and all(pool[k] != plain[k] for k in pool)
    assert all(name.endswith(".jpg") for name in _files(shifted, "pool"))  # the target camera writes JPEG
    assert not all(name.endswith(".jpg") for name in _files(shifted, "seed"))


def test_a_shifted_world_is_the_same_whoever_draws_it(tmp_path, shifted):
    again = make_world(shifted.config, tmp_path / "again", workers=2)
    for split in ("seed", "pool", "gold", "seed-gold"):
        assert _files(shifted, split) == _files(again, split)


def _objects(store: Store, split: str):
    images = store.read("images")
    ids = images.filter(pc.equal(images.column("split"), split)).column("image_id")
    regions = store.read("regions")
    regions = regions.filter(pc.and_(pc.equal(regions.column("kind"), "object"), pc.is_in(regions.column("image_id"), ids)))
    return regions, len(ids)


def _colour_pairs(store: Store, split: str) -> set[tuple[str, str]]:
    """(category, colour) of every object of ``split``, read from its region caption's words."""
    from engine.world.vocab import COLOURS

    regions, _ = _objects(store, split)
    captions = {r["region_id"]: r["label"] for r in store.read("regions").to_pylist() if r["kind"] == "region_caption"}
    pairs = set()
    for r in regions.to_pylist():
        image, k = r["region_id"].rsplit("-o", 1)
        words = captions[f"{image}-c{k}"].split()
        pairs |= {(r["label"], c) for c in COLOURS if c in words}
    return pairs


def test_the_seed_never_shows_a_held_out_colour_and_the_target_does(shifted):
    held = held_out_colours(shifted.config.seed, shifted.config.shift.held_out)
    assert all(len(c) == round(shifted.config.shift.held_out * 12) for c in held.values())
    novel = {(category, colour) for category, colours in held.items() for colour in colours}
    truth = Store(shifted.truth)
    seed, pool = _colour_pairs(truth, "seed"), _colour_pairs(truth, "pool")
    assert seed and not seed & novel
    assert pool & novel


def test_the_target_domain_has_more_and_smaller_objects(shifted):
    truth = Store(shifted.truth)
    (seed, n_seed), (pool, n_pool) = _objects(truth, "seed"), _objects(truth, "pool")
    assert pool.num_rows / n_pool > seed.num_rows / n_seed
    area = lambda t: np.median([(b[2] - b[0]) * (b[3] - b[1]) for b in t.column("box").to_pylist()])  # noqa: E731
    assert area(pool) < area(seed)


def test_seed_gold_is_kept_apart_and_guarded_like_gold(shifted):
    seed_gold = Store(shifted.seed_gold)
    ids = set(seed_gold.read("images").column("image_id").to_pylist())
    assert len(ids) == shifted.config.split_counts()["seed-gold"]
    assert not ids & set(Store(shifted.truth).read("images").column("image_id").to_pylist())
    assert ids <= GoldGuard.from_stores(seed_gold).gold_ids


@pytest.mark.parametrize("make, message", [
    (lambda: shift_named("nope"), "unknown shift 'nope'; known: none, mild, field, harsh"),
    (lambda: shift_named("field", blur=9.0), "blur must be within 0.0..4.0, got 9.0"),
    (lambda: shift_named("field", wobble=1), "unknown shift parameter"),
    (lambda: Shift(jpeg_quality=5), "jpeg_quality must be 0"),
    (lambda: Shift(noise=float("nan")), "noise must be within"),
    (lambda: parse_overrides(["blur"]), "expected NAME=VALUE"),
    (lambda: parse_overrides(["clutter=2.5"]), "not a whole number"),
    (lambda: WorldConfig(images=10, seed_fraction=0.5, gold_fraction=0.3, seed_gold_fraction=0.2), "room for the pool"),
])
def test_bad_shifts_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make()


def test_world_make_names_a_bad_shift_and_writes_nothing(tmp_path):
    out = tmp_path / "w"
    result = CliRunner().invoke(app, ["world", "make", "--out", str(out), "--images", "20", "--shift", "field",
                                      "--shift-set", "noise=99"])
    assert result.exit_code != 0 and "noise must be within 0.0..40.0" in result.output
    assert not out.exists()
    result = CliRunner().invoke(app, ["world", "make", "--out", str(out), "--images", "20", "--shift", "sideways"])
    assert "known: " + ", ".join(SHIFTS) in result.output


def test_two_samples_of_one_domain_share_what_the_seed_domain_never_shows():
    base = WorldConfig(images=20, seed=1, domain_seed=7, shift=SHIFTS["field"])
    other_sample = WorldConfig(images=50, seed=2, domain_seed=7, shift=SHIFTS["field"])
    other_domain = WorldConfig(images=20, seed=1, domain_seed=8, shift=SHIFTS["field"])
    assert base.domain("seed") == other_sample.domain("seed")
    assert base.domain_settings() == other_sample.domain_settings()
    assert base.domain("seed").colours != other_domain.domain("seed").colours
    assert base.domain_settings() != other_domain.domain_settings()
    # without a domain seed the world's own seed draws its domain (worlds made before it are unchanged)
    assert WorldConfig(images=20, seed=8, shift=SHIFTS["field"]).domain("seed") == other_domain.domain("seed")
