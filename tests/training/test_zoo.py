"""The model zoo: a published model's card and files, the checks that refuse a zoo that does not
fit the code or the world (each naming the rebuild command), adoption as round 0, and
``fld zoo build`` end to end on a tiny stand-in for the zoo profile."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.loop import profiles
from engine.loop.training import Trained, load_trained
from engine.loop.zoo import CARD, ZooError, adopt, build, check, domain_fingerprint, publish, sha256
from engine.world.config import WorldConfig
from engine.world.vocab import CATEGORIES
from specialists.training.yolo import YoloBudget


def _yolo(weights: Path, folder: Path) -> Trained:
    manifest = {"name": "yolo", "key": "k1", "weights": str(weights), "names": sorted(CATEGORIES), "imgsz": 64,
                "conf": 0.25, "seconds": 3.0, "config": {"epochs": 1},
                "measured": {"gold": {"region-text/detection_f1": {"value": 0.5, "low": 0.4, "high": 0.6, "images": 6}}}}
    return Trained("yolo", folder, manifest)


@pytest.fixture
def zoo(tmp_path, small_world, yolo_weights):
    published = publish(_yolo(yolo_weights, tmp_path), small_world, tmp_path / "zoo", YoloBudget(epochs=1, imgsz=64), "cpu")
    assert published.command == "fld zoo build --only yolo"
    return tmp_path / "zoo"


def test_a_published_card_names_its_world_files_and_metrics(zoo, small_world, yolo_weights):
    card = json.loads((zoo / "yolo" / CARD).read_text())
    assert card["world"]["domain"] == domain_fingerprint(small_world.config)
    assert card["files"] == {yolo_weights.name: sha256(yolo_weights)}
    assert card["facts"]["weights"] == yolo_weights.name  # relative: the zoo moves with the clone
    assert card["training"]["machine"]["cores"] >= 1 and card["training"]["epochs"] == 1
    assert "0.500" in (zoo / "yolo" / "CARD.md").read_text()
    assert not [p.name for p in zoo.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_publish_cut_between_its_renames_is_put_back(zoo, small_world, yolo_weights, tmp_path, monkeypatch):
    import engine.loop.zoo as zoo_module

    before = (zoo / "yolo" / CARD).read_text()
    real, calls = zoo_module.os.replace, []

    def dies_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is stopped between moving the old model aside and the new in
        real(src, dst)

    monkeypatch.setattr(zoo_module.os, "replace", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        publish(_yolo(yolo_weights, tmp_path), small_world, zoo, YoloBudget(epochs=1, imgsz=64), "cpu")
    monkeypatch.setattr(zoo_module.os, "replace", real)
    assert not (zoo / "yolo").exists() and (zoo / ".yolo.old").is_dir()
    assert set(check(zoo, small_world.config)) == {"yolo"}  # a reader puts the old model back
    assert (zoo / "yolo" / CARD).read_text() == before and not (zoo / ".yolo.old").exists()


def test_another_sample_of_the_same_domains_is_served(zoo, small_world):
    config = small_world.config
    other = WorldConfig(images=50, seed=config.seed + 1, domain_seed=config.domain_key, shift=config.shift)
    assert set(check(zoo, other)) == {"yolo"}


def _edit_card(zoo: Path, **changes) -> None:
    path = zoo / "yolo" / CARD
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("spoil, message", [
    (lambda zoo: _edit_card(zoo, world={"domain": "0123", "world_version": "0"}), "trained on another world"),
    (lambda zoo: _edit_card(zoo, trainer_version="0"), "trainer version 0"),
    (lambda zoo: next((zoo / "yolo").glob("*.pt")).unlink(), "is missing"),
    (lambda zoo: next((zoo / "yolo").glob("*.pt")).open("ab").write(b"\0"), "does not match its card's SHA-256"),
    (lambda zoo: (zoo / "yolo" / CARD).write_text('{"name": "yolo"'), "not a readable zoo card"),
    (lambda zoo: (zoo / "yolo" / CARD).write_text('{"name": "yolo"}'), "not a zoo card"),
    (lambda zoo: _edit_card(zoo, name="sam"), "lies in yolo/"),
    (lambda zoo: _edit_card(zoo, files={"../../card.json": "0"}), "outside its folder"),
    (lambda zoo: _edit_card(zoo, files=["best.pt"]), "wrong type of files"),
    (lambda zoo: (zoo / "yolo" / CARD).write_text('[1, 2]'), "not a zoo card"),
    (lambda zoo: _edit_card(zoo, facts={**json.loads((zoo / "yolo" / CARD).read_text())["facts"], "conf": 1.5}),
     r"confidence floor \(facts.conf\) must be a number within \[0, 1\], got 1.5"),
    (lambda zoo: _edit_card(zoo, facts={**json.loads((zoo / "yolo" / CARD).read_text())["facts"], "conf": "0.2"}),
     "got '0.2'"),
])
def test_a_zoo_that_does_not_fit_is_refused_with_the_rebuild_command(zoo, small_world, spoil, message):
    spoil(zoo)
    with pytest.raises(ZooError, match=message) as err:
        check(zoo, small_world.config)
    assert "fld zoo build --only yolo" in str(err.value)


def test_another_world_is_refused_by_the_cli_before_anything_runs(zoo, small_world, tmp_path):
    other = WorldConfig(images=30, seed=7, domain_seed=8)
    from engine.world.make import make_world

    world = make_world(other, tmp_path / "other-world", workers=1)
    result = CliRunner().invoke(app, ["zoo", "check", "--zoo", str(zoo), "--world", str(world.root)])
    assert result.exit_code == 1 and "another world" in result.output
    ok = CliRunner().invoke(app, ["zoo", "check", "--zoo", str(zoo), "--world", str(small_world.root)])
    assert ok.exit_code == 0, ok.output
    assert "detection_f1" in ok.output
    both = CliRunner().invoke(app, ["run", "--zoo", str(zoo), "--no-zoo", "--out", str(tmp_path / "x")])
    assert both.exit_code == 2 and "not both" in both.output


def test_a_florence2_whose_tokenizer_is_not_its_models_is_refused(tiny_florence2, small_world, tmp_path):
    from specialists.florence2_build import build_processor, train_tokenizer

    trained = Trained("florence2", tmp_path, {"name": "florence2", "key": "k", "weights": str(tiny_florence2),
                                              "tasks": ["<CAPTION>"], "seconds": 1.0})
    zoo = tmp_path / "zoo"
    publish(trained, small_world, zoo, {}, "cpu")
    assert set(check(zoo, small_world.config)) == {"florence2"}
    # another tokenizer (a larger vocabulary), its hashes written into the card as if it belonged
    other = build_processor(train_tokenizer(["words " * 50 + f"w{k}" for k in range(3000)], vocab_size=3000))
    checkpoint = zoo / "florence2" / tiny_florence2.name
    other.tokenizer.save_pretrained(checkpoint)
    card = json.loads((zoo / "florence2" / CARD).read_text())
    card["files"] = {str(p.relative_to(zoo / "florence2")): sha256(p) for p in sorted(checkpoint.rglob("*")) if p.is_file()}
    (zoo / "florence2" / CARD).write_text(json.dumps(card))
    with pytest.raises(ZooError, match="tokenizer") as err:
        check(zoo, small_world.config)
    assert "fld zoo build --only florence2" in str(err.value)


def test_adopted_models_are_copied_and_measured_on_this_worlds_gold(zoo, small_world, tmp_path):
    models = adopt(check(zoo, small_world.config), small_world, tmp_path / "models", profiles.profile("quick"),
                   only=("yolo",))
    yolo = models.models["yolo"]
    assert Path(yolo.weights).parent == tmp_path / "models" / "round-0" / "yolo"
    assert sha256(Path(yolo.weights)) == json.loads((zoo / "yolo" / CARD).read_text())["files"][Path(yolo.weights).name]
    assert "region-text/detection_f1" in yolo.gold  # measured here, not copied from the card
    assert yolo.manifest["zoo"]["command"] == "fld zoo build --only yolo"  # where it came from
    assert yolo.measured("gold")["region-text/detection_f1"]["images"] == 6
    again = adopt(check(zoo, small_world.config), small_world, tmp_path / "models", profiles.profile("quick"),
                  only=("yolo",))
    assert again.models["yolo"].manifest == load_trained(yolo.folder).manifest  # reused, not measured twice


def test_zoo_build_trains_publishes_and_reuses(tmp_path, monkeypatch, small_world):
    tiny = replace(profiles.PROFILES["quick"], name="zoo", world_images=24, seed_fraction=0.5, gold_fraction=0.25,
                   seed_gold_fraction=0.0, world_seed=3, bootstrap={"yolo": YoloBudget(epochs=1, imgsz=64)})
    monkeypatch.setitem(profiles.PROFILES, "zoo", tiny)
    with pytest.raises(ValueError, match="learn"):
        build(tmp_path / "work", tmp_path / "zoo", ("grabcut",))
    cards = build(tmp_path / "work", tmp_path / "zoo", ("yolo",))
    assert cards["yolo"].world["config"]["seed"] == 3 and cards["yolo"].training["epochs"] == 1
    assert set(check(tmp_path / "zoo", tiny.world(seed=11))) == {"yolo"}  # another sample of its domains
    again = build(tmp_path / "work", tmp_path / "zoo", ("yolo",))
    assert again["yolo"].training_key == cards["yolo"].training_key
    assert again["yolo"].files == cards["yolo"].files  # reused the training, not redone
    shutil.rmtree(tmp_path / "zoo")


def test_a_build_trained_elsewhere_is_measured_and_published_without_training_again(tmp_path, monkeypatch):
    from specialists.training.registry import TRAINERS
    from specialists.training.sam import SamBudget

    tiny = replace(profiles.PROFILES["quick"], name="zoo", world_images=24, seed_fraction=0.5, gold_fraction=0.25,
                   seed_gold_fraction=0.0, world_seed=3,
                   bootstrap={"yolo": YoloBudget(epochs=1, imgsz=64), "sam": SamBudget(steps=40)})
    monkeypatch.setitem(profiles.PROFILES, "zoo", tiny)
    with pytest.raises(ValueError, match="no steps"):
        build(tmp_path / "work", tmp_path / "zoo", ("yolo",), steps=2)
    # the GPU machine: trains and stops; nothing measured, nothing published
    assert build(tmp_path / "work", tmp_path / "zoo", ("sam",), steps=2, train_only=True) == {}
    folder = tmp_path / "work" / "models" / "round-0" / "sam"
    trained = json.loads((folder / "trained.json").read_text())
    assert trained["config"]["steps"] == 2 and trained["machine"]["device"] == "cpu"
    assert not (folder / "manifest.json").exists() and not (tmp_path / "zoo").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(TRAINERS["sam"], "train", no_training)
    card = build(tmp_path / "work", tmp_path / "zoo", ("sam",), steps=2)["sam"]  # here: measure and publish
    assert card.command == "fld zoo build --only sam --steps 2"
    assert card.training["machine"] == trained["machine"] and card.budget["steps"] == 2
    assert card.gold["gold"]["region-text/mask_iou"]["images"] > 0
    with pytest.raises(AssertionError, match="trained again"):  # other steps: another training
        build(tmp_path / "work", tmp_path / "zoo", ("sam",), steps=3)
    (folder / "trained.json").write_text('{"key": "cut sho')  # a copy cut short: trained again, no crash
    with pytest.raises(AssertionError, match="trained again"):
        build(tmp_path / "work", tmp_path / "zoo", ("sam",), steps=2, train_only=True)


def test_each_fine_tuning_starts_from_the_published_model_and_its_card_keeps_every_stage(tmp_path, monkeypatch):
    from engine.loop.zoo import fine_tune
    from specialists.training.registry import TRAINERS
    from specialists.training.sam import SamBudget

    tiny = replace(profiles.PROFILES["quick"], name="zoo", world_images=24, seed_fraction=0.5, gold_fraction=0.25,
                   seed_gold_fraction=0.0, world_seed=3, bootstrap={"sam": SamBudget(steps=2)},
                   fine_tune={"sam": (SamBudget(steps=3), SamBudget(steps=4))})
    monkeypatch.setitem(profiles.PROFILES, "zoo", tiny)
    work, zoo = tmp_path / "work", tmp_path / "zoo"
    with pytest.raises(ZooError, match="no model zoo"):  # nothing published to start from
        fine_tune(work, zoo, ("sam",))
    base = build(work, zoo, ("sam",))["sam"]
    with pytest.raises(ValueError, match="fine-tunes sam, not yolo"):
        fine_tune(work, zoo, ("yolo",))
    started_from = []
    real = TRAINERS["sam"].train

    def spy(data, folder, budget, previous, device):
        started_from.append((previous["weights"], budget.steps))
        return real(data, folder, budget, previous, device)

    monkeypatch.setattr(TRAINERS["sam"], "train", spy)
    card = fine_tune(work, zoo, ())["sam"]  # default: what the profile fine-tunes
    assert len(started_from) == 1 and started_from[0][1] == 3
    assert sha256(Path(started_from[0][0])) == base.files[Path(started_from[0][0]).name]  # the published weights
    assert card.files != base.files and card.budget["steps"] == 3
    assert card.command == "fld zoo build --only sam && fld zoo build --only sam --fine-tune"
    assert [s["command"] for s in card.stages] == [base.command] and card.stages[0]["files"] == base.files
    assert card.stages[0]["training_key"] == base.training_key
    assert "Stage 1" in (zoo / "sam" / "CARD.md").read_text()
    assert check(zoo, tiny.world())["sam"].card == card  # read back whole, and served
    second = fine_tune(work, zoo, ("sam",))["sam"]  # the profile's next stage, from the first's weights
    assert started_from[1][1] == 4 and sha256(Path(started_from[1][0])) == card.files[Path(started_from[1][0]).name]
    assert second.command == card.command + " && fld zoo build --only sam --fine-tune"
    assert [s["budget"]["steps"] for s in second.stages] == [2, 3] and second.fine_tunings == 2
    with pytest.raises(ZooError, match="already fine-tuned with every stage.*`fld zoo build --only sam`"):
        fine_tune(work, zoo, ("sam",))
    # a zoo fine-tuned with a stage this profile does not hold is refused, with the command for its stages
    monkeypatch.setitem(profiles.PROFILES, "zoo", replace(tiny, fine_tune={"sam": (SamBudget(steps=3), SamBudget(steps=5))}))
    with pytest.raises(ZooError, match="not the zoo profile's stage 2; rebuild it with `fld zoo build --only sam && "
                                       "fld zoo build --only sam --fine-tune && fld zoo build --only sam --fine-tune`"):
        fine_tune(work, zoo, ("sam",))
    result = CliRunner().invoke(app, ["zoo", "build", "--fine-tune", "--steps", "2", "--zoo", str(zoo), "--work", str(work)])
    assert result.exit_code != 0 and "--fine-tune takes its budget" in result.output


def test_a_build_chooses_thresholds_on_the_calibration_sample_and_its_card_says_where(tmp_path, monkeypatch):
    """Held-out seed-domain truth of another sample: not the zoo world's images, not its gold. The
    thresholds travel on the card into the rounds; calibrating on other images measures again
    without training again."""
    from engine.dataset.store import Store
    from engine.loop import zoo as zoo_module
    from specialists.training.registry import TRAINERS
    from specialists.training.sam import SamBudget

    tiny = replace(profiles.PROFILES["quick"], name="zoo", world_images=24, seed_fraction=0.5, gold_fraction=0.25,
                   seed_gold_fraction=0.0, world_seed=3, bootstrap={"sam": SamBudget(steps=2)})
    monkeypatch.setitem(profiles.PROFILES, "zoo", tiny)
    monkeypatch.setattr(zoo_module, "CALIBRATION_IMAGES", 4)
    seen = []

    def calibrate(manifest, data, device):
        seen.append(data)
        return {"conf": 0.4, "calibration": {"images": len(data), "f1": 0.5}}

    monkeypatch.setattr(TRAINERS["sam"], "calibrate", calibrate)
    work, zoo = tmp_path / "work", tmp_path / "zoo"
    card = build(work, zoo, ("sam",))["sam"]
    world = zoo_module.zoo_world(work)
    assert len(seen) == 1 and len(seen[0]) == 4
    assert not set(seen[0].ids()) & set(Store(world.truth).read("images").column("image_id").to_pylist())
    assert not set(seen[0].ids()) & set(Store(world.gold).read("images").column("image_id").to_pylist())
    assert card.world["calibration"]["config"]["seed"] == zoo_module.CALIBRATION_SEED
    assert card.world["calibration"]["config"]["domain_seed"] == world.config.domain_seed  # the seed domain
    assert card.facts["conf"] == 0.4 and "calibrated_on" not in card.facts
    assert "Confidence floor 0.4" in (zoo / "sam" / "CARD.md").read_text()
    assert check(zoo, tiny.world())["sam"].card.facts["conf"] == 0.4  # read back, and adopted with it
    monkeypatch.setattr(TRAINERS["sam"], "train", lambda *a, **k: pytest.fail("trained again"))
    build(work, zoo, ("sam",))
    assert len(seen) == 1  # the same calibration images: measured once
    monkeypatch.setattr(zoo_module, "CALIBRATION_SEED", 2001)
    again = build(work, zoo, ("sam",))["sam"]
    assert len(seen) == 2 and again.training_key == card.training_key  # calibrated and measured again, not trained
    assert set(seen[1].ids()).isdisjoint(seen[0].ids())


def test_a_zoo_world_copied_elsewhere_is_drawn_again_where_it_is(tmp_path, monkeypatch):
    """A work folder copied to another machine or path (a lent GPU's) names its images by the old
    place: the same world is drawn again where it now is, not read from where it was."""
    from engine.dataset.store import Store
    from engine.loop.zoo import calibration_world, zoo_world
    from engine.world.make import World

    tiny = replace(profiles.PROFILES["quick"], name="zoo", world_images=24, seed_fraction=0.5, gold_fraction=0.25,
                   seed_gold_fraction=0.0, world_seed=3)
    monkeypatch.setitem(profiles.PROFILES, "zoo", tiny)
    monkeypatch.setattr("engine.loop.zoo.CALIBRATION_IMAGES", 4)
    ids = lambda world: sorted(Store(world.truth).read("images").column("image_id").to_pylist())  # noqa: E731
    first, calibration = zoo_world(tmp_path / "a"), calibration_world(tmp_path / "a")
    before = [(first.version, ids(first)), (calibration.version, ids(calibration))]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    assert not World.open(tmp_path / "b" / "world").in_place()
    for drawn, (version, images) in zip((zoo_world(tmp_path / "b"), calibration_world(tmp_path / "b")), before):
        assert drawn.in_place() and drawn.version == version and ids(drawn) == images
        uris = Store(drawn.truth).read("images").column("uri").to_pylist()
        assert all(u.startswith(str(tmp_path / "b")) for u in uris)


def test_a_model_trained_on_a_gpu_is_measured_on_the_cpu_without_one(monkeypatch):
    import torch

    from engine.loop.training import usable_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert usable_device("cuda") == "cpu" and usable_device("cuda:1") == "cpu" and usable_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert usable_device("cuda") == "cuda"


def test_the_committed_zoo_serves_the_default_profiles_world():
    """`make run` adopts the zoo committed in zoo/: a change to the trainers' version, the world's
    domain or a weights file that its cards do not match would refuse it there, so it is caught here."""
    from engine.loop.zoo import DEFAULT_ZOO
    from specialists.training.registry import TRAINERS

    found = check(DEFAULT_ZOO, profiles.profile("default").world())
    assert {"yolo", "sam", "florence2"} <= set(found) <= set(TRAINERS)
    # its Florence-2 has had every fine-tuning of the zoo profile (another `--fine-tune` would be
    # refused), its card read back from JSON (lists) against the profile's budgets (tuples)
    from engine.loop.zoo import budget_record

    stages = profiles.profile("zoo").fine_tune["florence2"]
    assert found["florence2"].card.fine_tunings == len(stages)
    assert found["florence2"].card.budget == budget_record(stages[-1])
    assert found["yolo"].card.fine_tunings == 0
