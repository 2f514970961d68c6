"""One annotation path: a gate's gold numbers are those of a round run with that model alone;
every shipped round config runs; a specialist from outside the package trains, gates and runs
in a round without engine code knowing it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.compute as pc
import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import Store
from engine.evaluation.round_quality import evaluate_round
from engine.evaluation.measure import measure_specs
from engine.loop.serving import round_config, round_filters, specs
from engine.loop.training import measure_on_gold
from engine.round.config import RoundConfig, SpecialistSpec
from engine.round.run import run_round
from engine.round.runtime import Runtime
from filters.text import TextFilterConfig
from specialists.training.registry import trainer_for

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "engine" / "configs").glob("*.toml"))


@pytest.fixture(scope="module")
def ray_session():
    with Runtime(num_cpus=2):
        yield


def gold_dataset(world, root: Path) -> Store:
    store = Store(root, create=True)
    ingest(str(world.images("gold")), store, IngestConfig(split="gold"))
    return store


def round_metrics(store: Store, round_id: int, gold: Store) -> dict[str, float | None]:
    return {f"{r['family']}/{r['metric']}": r["value"] for r in evaluate_round(store, round_id, gold).to_pylist()}


def values(found) -> dict:
    return {m.key: m.value for m in found}


@pytest.mark.parametrize("placement", ["fused", "pools"])
def test_a_gate_reads_what_a_round_with_that_model_alone_keeps(ray_session, small_world, tiny_florence2, tmp_path,
                                                               placement):
    """Whichever way the round lays its workers out (rows never depend on it)."""
    trainer = trainer_for("florence2")
    manifest = {"weights": str(tiny_florence2), "tasks": ["<CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>", "<OD>"]}
    gold = Store(small_world.gold)
    gate = {m.key: m.value for m in measure_on_gold(trainer, manifest, gold)}  # what the gate of this model reads
    assert {"region-text/detection_f1", "text/brief.cider", "text-phrase-region/grounding_recall@1"} <= set(gate)
    config = round_config(trainer.serve(manifest, manifest["tasks"], "cpu"), splits=("gold",))
    config = dataclasses.replace(config, placement=placement)
    store = gold_dataset(small_world, tmp_path / "ds")
    summary = run_round(store, 1, config)
    assert summary.kept["texts"] > 0 and summary.kept["triplets"] > 0  # captions, and their phrases grounded
    assert summary.raw["triplets"] >= summary.kept["triplets"]
    measured = round_metrics(store, 1, gold)
    assert {k: measured[k] for k in gate} == gate


def test_a_gate_sees_the_filters_not_the_raw_output(small_world, tiny_florence2):
    """A captioner whose every description the round's filters drop has nothing on gold."""
    servings = trainer_for("florence2").serve({"weights": str(tiny_florence2)}, ["<CAPTION>"], "cpu")
    gold = Store(small_world.gold)
    kept = values(measure_specs(specs(servings), round_filters(servings), gold))
    strict = dataclasses.replace(round_filters(servings), text=TextFilterConfig(min_tokens=50))
    dropped = values(measure_specs(specs(servings), strict, gold))
    assert kept["text/brief.coverage"] == 1.0 and kept["text/brief.cider"] is not None
    assert dropped["text/brief.coverage"] == 0.0 and dropped["text/brief.cider"] is None


def with_tiny_weights(config: RoundConfig, weights: dict[str, dict]) -> RoundConfig:
    """A shipped config with the tests' tiny models in place of the real checkpoints, on the CPU."""
    swapped = []
    for spec in config.specialists:
        options = {**spec.options, **weights.get(spec.name, {})}
        if "device" in options:
            options["device"] = "cpu"
        swapped.append(dataclasses.replace(spec, options=options, gpus=0.0, cpus=0.25, workers=1))
    return dataclasses.replace(config, specialists=tuple(swapped), splits=("gold",), shard_size=4)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_orders_and_runs(ray_session, path, small_world, yolo_weights, tiny_sam,
                                                    tiny_florence2, tmp_path):
    config = RoundConfig.from_file(path)
    stages = config.stages()
    assert sorted(k for stage in stages for k in stage) == sorted(s.key for s in config.specialists)
    weights = {"yolo": {"weights": str(yolo_weights), "imgsz": 160, "conf": 0.0},
               "sam": {"checkpoint": str(tiny_sam), "model_type": "tiny"},
               "florence2": {"checkpoint": str(tiny_florence2), "max_new_tokens": 24}}
    store = gold_dataset(small_world, tmp_path / "ds")
    summary = run_round(store, 1, with_tiny_weights(config, weights))
    assert summary.images == store.read("images").num_rows and summary.failures == 0
    made = {r["specialist"] for t in ("texts", "regions", "triplets") for r in store.read(t, 1).to_pylist()}
    made |= {r["mask_specialist"].split("@")[0] for r in store.read("regions", 1).to_pylist() if r["mask_specialist"]}
    made |= {m["specialist"] for r in store.read("regions", 1).to_pylist() for m in r["members"] or []}
    raw_specialists = {s.name for s in config.specialists}
    assert made & raw_specialists, f"{path.name}: no specialist's rows were kept"


def test_a_new_specialist_is_one_module_one_trainer_one_registry_line(ray_session, small_world, tmp_path, request):
    """tests/toy_specialist.py holds the specialist and its trainer; registering the trainer is
    the only other step. It bootstraps, is gated, and runs in a round (in Ray workers that import
    it by its plugin name) without a line of engine code naming it."""
    from engine.loop.bootstrap import bootstrap
    from engine.loop.gates import GateConfig
    from engine.loop.profiles import Profile
    from engine.loop.refine import config_path, first_round
    from specialists.training import registry
    from tests.toy_specialist import PLUGIN, ToyTrainer

    request.addfinalizer(lambda: registry.TRAINERS.pop("toy", None))
    registry.register(ToyTrainer())
    with pytest.raises(ValueError, match="a trainer named 'toy' is registered already"):
        registry.register(ToyTrainer())
    profile = Profile("toy", world_images=30, seed_fraction=0.3, gold_fraction=0.2, bootstrap={}, refine={})
    models = bootstrap(small_world, tmp_path / "models", profile, only=("toy",))
    toy = models.models["toy"]
    assert toy.manifest["label"] and "region-text/detection_f1" in toy.gold
    store = gold_dataset(small_world, tmp_path / "ds")
    floors = GateConfig(floors={"region-text/detection_f1": 0.0})  # the box prior is weak; the path is the point
    first = first_round(store.root, tmp_path / "models", models, floors)
    assert first.gates["toy:<OD>"][0].chosen == "candidate"
    config = RoundConfig.from_file(config_path(store.root, 1))
    assert {s.name for s in config.specialists} == {"rapidocr", PLUGIN}
    run_round(store, 1, dataclasses.replace(config, splits=("gold",)))
    regions = store.read("regions", 1)
    toy_rows = regions.filter(pc.equal(regions.column("specialist"), "toy"))
    assert toy_rows.num_rows == store.read("images").num_rows  # one prior box per image kept
    gold = Store(small_world.gold)
    assert round_metrics(store, 1, gold)["region-text/detection_f1"] is not None
    toy_spec = next(s for s in config.specialists if s.key == "toy")
    alone = values(measure_specs([toy_spec], config.filters, gold, batch_size=config.shard_size))
    assert alone["region-text/detection_f1"] == toy.gold["region-text/detection_f1"]


def test_a_specialist_without_a_trainer_or_plugin_is_named():
    with pytest.raises(ValueError, match="no trainer for specialist 'clip'; known: yolo, sam, grabcut, florence2"):
        trainer_for("clip")
    with pytest.raises(ValueError, match="specialist plugin 'tests.toy_specialist:nothing' cannot be imported"):
        SpecialistSpec("tests.toy_specialist:nothing")


def test_a_gold_image_that_cannot_be_read_stops_the_measurement_naming_it(tmp_path):
    """Measured as an image where nothing was found, a vanished gold file would lower every gate's
    number unseen (a gold store copied without its images measured 0 everywhere)."""
    import shutil

    from engine.world.config import WorldConfig
    from engine.world.make import make_world

    world = make_world(WorldConfig(images=12, seed=3), tmp_path / "world", workers=1)
    gold = Store(world.gold)
    images = gold.read("images").to_pylist()
    victim = images[0]
    shutil.move(victim["uri"], tmp_path / "moved")
    spec = SpecialistSpec("tests.toy_specialist:build", {"box": [0.1, 0.1, 0.5, 0.5], "label": "car"}, key="toy")
    with pytest.raises(ValueError, match=f"gold image.* cannot be read.*{victim['image_id']}"):
        measure_specs([spec], round_filters([]), gold)
