"""The model zoo: round-0 models trained long on the embedded world's seed domain (``fld zoo
build``), committed with a card each, and adopted by ``fld run`` as a user adopts released weights.

    zoo/<name>/card.json   how it was made and how to rebuild it: the command, the code commit, the
                           world and its domain's fingerprint, the budget, wall time and machine,
                           gold metrics (target and seed domain), and each file's SHA-256
    zoo/<name>/CARD.md     the same, for people
    zoo/<name>/<weights>   the weights: a file (YOLO, SAM) or a checkpoint folder (Florence-2)

A card is checked before its model is used: a card for another world's domain, another trainer
version, a missing file or a file whose hash differs is refused, naming the command that rebuilds
it. A trainer may check more (``Trainer.check``: Florence-2's tokenizer against its model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from engine.loop.bootstrap import ModelSet, bootstrap, models_dir
from engine.loop.gates import GateConfig, rival_bars
from engine.loop.machine import machine
from engine.loop.profiles import Profile, budget_for, profile
from engine.loop.training import TRAINER_VERSION, Trained, adopt_and_measure, train_and_measure
from engine.loop.training_set import gold_stores, world_training_set
from engine.world.config import WorldConfig
from engine.world.make import WORLD_VERSION, World, make_world
from schemas.hashing import fingerprint
from specialists.training.registry import TRAINERS, trainer_for

log = logging.getLogger(__name__)
CARD = "card.json"
ZOO_PROFILE = "zoo"
CALIBRATION_SEED = 2000
CALIBRATION_IMAGES = 100
DEFAULT_ZOO = Path(__file__).resolve().parents[2] / "zoo"
"""The zoo committed with the code (``zoo/`` at the repository's root)."""


class ZooError(ValueError):
    """A zoo that cannot be used as it is; the message names the card and the rebuild command."""


def domain_fingerprint(config: WorldConfig) -> str:
    """What a zoo model's card must share with the world it serves: how the world is drawn and its
    domains (never which sample, how many images or how they are split)."""
    return fingerprint({"world_version": WORLD_VERSION, **config.domain_settings()})


def rebuild_command(name: str, device: str = "cpu", steps: int | None = None) -> str:
    return (f"fld zoo build --only {name}" + (f" --device {device}" if device != "cpu" else "")
            + (f" --steps {steps}" if steps is not None else ""))


@dataclass(frozen=True)
class Card:
    """One zoo model: what it is, how it was made, and what it scored."""

    name: str
    command: str
    code_commit: str | None
    world: dict
    """The zoo world's config, its domain fingerprint and its world version."""
    trainer_version: str
    training_key: str
    """The key of the training (its data, settings and gold): the same command gives the same key."""
    budget: dict
    training: dict
    """Wall time, steps or epochs, the device and the machine it ran on."""
    gold: dict
    """Per split (``gold``: the zoo world's target domain; ``seed-gold``: its seed domain), each
    metric's value and 95% interval."""
    facts: dict
    """The trainer's manifest facts; ``weights`` relative to the card's folder."""
    files: dict[str, str]
    """Each file of the weights (relative path) and its SHA-256."""
    stages: list[dict] = field(default_factory=list)
    """A fine-tuned model's earlier trainings, first first (``fld zoo build --fine-tune``): each the
    card of the model it started from, but its gold and facts (command, code commit, budget,
    training, training key, files). ``command`` rebuilds them all."""

    def to_dict(self) -> dict:
        return asdict(self)

    def stage(self) -> dict:
        """This card as a later fine-tuning's earlier stage."""
        return {k: v for k, v in self.to_dict().items() if k not in ("gold", "facts", "stages", "world", "name")}

    @property
    def fine_tunings(self) -> int:
        """How many fine-tunings made this model after its first training (its earlier stages)."""
        return len(self.stages)

    @classmethod
    def read(cls, path: Path) -> Card:
        try:
            values = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ZooError(f"{path}: not a readable zoo card ({err})") from None
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if not isinstance(values, dict) or required - set(values):
            missing = sorted(required - set(values)) if isinstance(values, dict) else sorted(required)
            raise ZooError(f"{path}: not a zoo card (missing {', '.join(missing)})")
        wrong = [k for k in ("world", "budget", "training", "gold", "facts", "files") if not isinstance(values[k], dict)]
        wrong += [k for k in ("name", "command", "trainer_version", "training_key") if not isinstance(values[k], str)]
        if not (isinstance(values.get("stages", []), list) and all(isinstance(s, dict) for s in values.get("stages", []))):
            wrong.append("stages")
        if wrong or not all(isinstance(k, str) and isinstance(v, str) for k, v in values["files"].items()):
            raise ZooError(f"{path}: not a zoo card (wrong type of {', '.join(wrong) or 'files'})")
        return cls(**{k: values[k] for k in names if k in values})


def budget_record(budget: object) -> dict:
    """A budget as its card records it (and reads it back: JSON, tuples as lists)."""
    return json.loads(json.dumps(asdict(budget) if is_dataclass(budget) else dict(budget), default=str))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_files(weights: Path) -> list[Path]:
    """The files of a weights file or checkpoint folder, in a fixed order."""
    return [weights] if weights.is_file() else sorted(p for p in weights.rglob("*") if p.is_file())


def _commit() -> str | None:
    """The code's git commit (with ``+dirty`` when the tree differs), when it runs from a clone."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def publish(trained: Trained, world: World, zoo: Path, budget: object, device: str, steps: int | None = None,
            command: str | None = None, stages: list[dict] | None = None, calibration: World | None = None) -> Card:
    """Copy a trained model's weights into ``zoo/<name>/`` with its card (replacing what was there
    only once the new folder is complete). ``command`` (default: ``fld zoo build`` with ``device``
    and ``steps``) and ``stages`` are a fine-tuning's (``fine_tune``); ``calibration`` is the world
    its thresholds were chosen on."""
    zoo.mkdir(parents=True, exist_ok=True)
    recover(zoo)
    name = trained.name
    staging = zoo / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    facts = {k: v for k, v in trained.manifest.items()
             if k not in ("key", "gold", "measured", "units", "seconds", "name", "machine", "calibrated_on")}
    if trained.weights:
        source = Path(trained.weights)
        target = staging / source.name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
        facts["weights"] = source.name
        files = {str(p.relative_to(staging)): sha256(p) for p in weights_files(target)}
    else:
        files = {}
    training = {"seconds": round(trained.manifest.get("seconds", 0.0), 1),
                "machine": trained.manifest.get("machine") or machine(device),
                **{k: trained.manifest[k] for k in ("steps", "train_seconds") if k in trained.manifest}}
    if "config" in trained.manifest and "epochs" in trained.manifest["config"]:
        training["epochs"] = trained.manifest["config"]["epochs"]
    card = Card(name=name, command=command or rebuild_command(name, device, steps), code_commit=_commit(),
                world={"config": world.config.to_dict(), "domain": domain_fingerprint(world.config),
                       "world_version": WORLD_VERSION, "world": world.version,
                       **({"calibration": {"config": calibration.config.to_dict(), "world": calibration.version}}
                          if calibration is not None else {})},
                trainer_version=TRAINER_VERSION, training_key=trained.manifest["key"],
                budget=budget_record(budget),
                training=training, gold=trained.manifest.get("measured", {}), facts=facts, files=files,
                stages=list(stages or []))
    (staging / CARD).write_text(json.dumps(card.to_dict(), indent=2, default=str) + "\n")
    (staging / "CARD.md").write_text(card_markdown(card))
    final = zoo / name
    if final.exists():
        old = zoo / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)  # a crash between the two renames leaves .<name>.old: `recover` puts it back
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)
    return card


def recover(zoo: Path) -> list[str]:
    """Put back each model an interrupted ``publish`` left aside (``.<name>.old`` without
    ``<name>``): readers then see the model as it was before that publish."""
    restored = []
    for old in sorted(zoo.glob(".*.old")) if zoo.is_dir() else []:
        final = zoo / old.name[1:].removesuffix(".old")
        if not final.exists() and (old / CARD).is_file():
            os.replace(old, final)
            log.warning("zoo: %s was left aside by an interrupted publish; put back", final)
            restored.append(final.name)
    return restored


def card_markdown(card: Card) -> str:
    lines = [f"# Zoo model `{card.name}`", "",
             f"Rebuild: `{card.command}` (code {card.code_commit or 'unknown'}, trainer version {card.trainer_version}).", "",
             f"World: {card.world['config'].get('images')} images, sample seed {card.world['config'].get('seed')}, "
             f"domain fingerprint `{card.world['domain']}` (world version {card.world['world_version']}, "
             f"world `{card.world['world']}`); trained on its seed split. Training key (a fingerprint of "
             f"the training images' content ids, their annotation counts, the settings and the gold split): "
             f"`{card.training_key}`.", "",
             *_calibration_lines(card),
             *(line for i, stage in enumerate(card.stages, 1) for line in (
                 f"Stage {i} (the model this one was fine-tuned from; `{stage.get('command')}`, code "
                 f"{stage.get('code_commit') or 'unknown'}, training key `{stage.get('training_key')}`): budget "
                 f"`{json.dumps(stage.get('budget'), default=str)}`; {_training_text(stage.get('training') or {})}; "
                 f"files {', '.join(f'{f} `{h[:16]}`' for f, h in sorted((stage.get('files') or {}).items()))}.", "")),
             f"{'Last stage: b' if card.stages else 'B'}udget: `{json.dumps(card.budget, default=str)}`.", "",
             f"Training: {_training_text(card.training)}.", "",
             "| split | metric | value | 95% low | 95% high | images |", "|---|---|---:|---:|---:|---:|"]
    for split, metrics in card.gold.items():
        for metric, m in sorted(metrics.items()):
            cells = [m.get("value"), m.get("low"), m.get("high")]
            lines.append(f"| {split} | {metric} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells)
                         + f" | {m.get('images') or '-'} |")
    lines += ["", "| file | sha256 |", "|---|---|"] + [f"| {f} | `{h}` |" for f, h in sorted(card.files.items())]
    return "\n".join(lines) + "\n"


def _calibration_lines(card: Card) -> list[str]:
    """Where its confidence floor was chosen, when it was chosen on the calibration world."""
    where, found = card.world.get("calibration"), card.facts.get("calibration")
    if not where or not found:
        return []
    return [f"Confidence floor {card.facts.get('conf')}: chosen for the best detection F1 ({found.get('f1')}) on "
            f"{found.get('images')} seed-domain images of another sample (seed {where['config'].get('seed')}, world "
            f"`{where.get('world')}`), never gold.", ""]


def _training_text(training: dict) -> str:
    machine = training.get("machine") or {}
    return (f"{training.get('seconds')} s wall on {machine.get('device')} ({machine.get('cpu')}, {machine.get('cores')} cores"
            f"{', ' + machine['gpu'] if machine.get('gpu') else ''})"
            + "".join(f", {k} {training[k]}" for k in ("epochs", "steps") if k in training))


@dataclass(frozen=True)
class ZooModel:
    card: Card
    folder: Path

    @property
    def source(self) -> str:
        """What an adoption of it is keyed by: its training, files and facts (a floor chosen again
        serves the same weights otherwise)."""
        return fingerprint({"card": self.card.training_key, "files": self.card.files, "facts": self.card.facts})


def check(zoo: Path, world: WorldConfig, names: tuple[str, ...] | None = None) -> dict[str, ZooModel]:
    """The zoo's usable models for a world drawn by ``world`` (``names``: only those), each card
    checked against the code and its files; anything wrong is refused with the rebuild command."""
    if not zoo.is_dir():
        raise ZooError(f"no model zoo at {zoo}; build one with `fld zoo build`")
    recover(zoo)
    found: dict[str, ZooModel] = {}
    for card_path in sorted(zoo.glob(f"*/{CARD}")):
        folder_name = card_path.parent.name
        if folder_name.startswith("."):
            continue  # a publish's staging or the model it set aside: not (yet) the zoo's
        try:
            card = Card.read(card_path)
        except ZooError as err:
            raise ZooError(f"{err}; rebuild it with `{rebuild_command(folder_name)}`") from None
        if names is not None and card.name not in names:
            continue
        rebuild = f"rebuild it with `{rebuild_command(folder_name)}`"
        if card.name not in TRAINERS:
            raise ZooError(f"{card_path}: no trainer for {card.name!r} in this code (known: {', '.join(TRAINERS)})")
        if folder_name != card.name:
            raise ZooError(f"{card_path}: the card is for {card.name!r} but lies in {folder_name}/; {rebuild}")
        rebuild = f"rebuild it with `{card.command}`"
        if card.world.get("domain") != domain_fingerprint(world):
            raise ZooError(f"{card_path}: {card.name} was trained on another world (domain {card.world.get('domain')}, "
                           f"world version {card.world.get('world_version')}) than this one (domain "
                           f"{domain_fingerprint(world)}, world version {WORLD_VERSION}); {rebuild}")
        if card.trainer_version != TRAINER_VERSION:
            raise ZooError(f"{card_path}: made by trainer version {card.trainer_version}, this code's is "
                           f"{TRAINER_VERSION}; {rebuild}")
        inside = [*card.files, *([card.facts["weights"]] if card.facts.get("weights") else [])]
        if any(Path(f).is_absolute() or ".." in Path(f).parts for f in inside):
            raise ZooError(f"{card_path}: names a file outside its folder; {rebuild}")
        for relative, expected in sorted(card.files.items()):
            path = card_path.parent / relative
            if not path.is_file():
                raise ZooError(f"{card_path}: its file {relative} is missing; {rebuild}")
            if sha256(path) != expected:
                raise ZooError(f"{card_path}: {relative} does not match its card's SHA-256 (changed or corrupt); {rebuild}")
        conf = card.facts.get("conf")
        if conf is not None and (isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0):
            raise ZooError(f"{card_path}: its confidence floor (facts.conf) must be a number within [0, 1], got "
                           f"{conf!r}; {rebuild}")
        model = ZooModel(card, card_path.parent)
        try:
            trainer_for(card.name).check(installed_facts(model, card_path.parent))
        except ValueError as err:
            raise ZooError(f"{card_path}: {err}; {rebuild}") from None
        found[card.name] = model
    return found


def installed_facts(model: ZooModel, folder: Path) -> dict:
    """The card's facts with the weights path resolved under ``folder``."""
    facts = dict(model.card.facts)
    if facts.get("weights"):
        facts["weights"] = str(folder / facts["weights"])
    return facts


def install(model: ZooModel, folder: Path) -> dict:
    """Copy a zoo model's weights into ``folder`` (unless an intact copy is there); its facts with
    the weights path in ``folder``."""
    facts = installed_facts(model, folder)
    if not facts.get("weights"):
        return facts
    target = Path(facts["weights"])
    intact = all((folder / f).is_file() and sha256(folder / f) == h for f, h in model.card.files.items())
    if not intact:
        folder.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        source = model.folder / model.card.facts["weights"]
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
    return facts


def adopt(zoo: dict[str, ZooModel], world: World, models_root: str | Path, fallback: Profile,
          step: Callable[[str], None] | None = None, device: str = "cpu", only: tuple[str, ...] | None = None,
          gates: GateConfig | None = None) -> ModelSet:
    """Round 0 from the zoo: each zoo model copied into ``<models>/round-0/<name>`` and measured
    on this world's gold (stopped early for the tasks that cannot pass ``gates``: see
    ``train_specialists``) and seed-gold; a registered
    specialist (of ``only``, default all) the zoo lacks is trained with ``fallback``'s bootstrap
    budget, as without a zoo."""
    root = models_dir(models_root, 0)
    gold, seed_gold = gold_stores(world)
    models: dict[str, Trained] = {}
    names = tuple(TRAINERS) if only is None else only
    missing = [n for n in names if n not in zoo and TRAINERS[n].trains]  # GrabCut learns nothing: never in a zoo
    data = None
    for name in names:
        trainer = TRAINERS[name]
        stop = gates.early_stop(rival_bars(models, gates)) if gates else None
        if name in zoo:
            if step:
                step(f"adopt {name} from the zoo")
            facts = {**install(zoo[name], root / name),
                     "zoo": {"card": str(zoo[name].folder / CARD), "command": zoo[name].card.command,
                             "training_key": zoo[name].card.training_key, "code_commit": zoo[name].card.code_commit}}
            models[name] = adopt_and_measure(trainer, facts, zoo[name].source, root, gold, device, seed_gold, stop)
            continue
        if data is None:
            if missing:
                log.warning("the zoo has no %s: trained with the %s profile's budget", ", ".join(missing), fallback.name)
            data = world_training_set(world, ("seed",))
        if step:
            step(f"train {name} on seed")
        models[name] = train_and_measure(trainer, data, root, budget_for(fallback.bootstrap, trainer), gold,
                                         device=device, seed_gold=seed_gold, stop=stop)
    return ModelSet(0, models)


def zoo_world(work: Path) -> World:
    """The zoo profile's world under ``work/world`` (drawn once, reused while its config holds)."""
    return _drawn(profile(ZOO_PROFILE).world(), work / "world")


def calibration_world(work: Path) -> World:
    """``CALIBRATION_IMAGES`` seed-domain images of another sample than the zoo world's (world seed
    ``CALIBRATION_SEED``; one image each of its pool and gold, which nothing reads), under
    ``work/calibration``: truth that no zoo model trains on and no card's gold holds, where a model
    chooses its thresholds (``Trainer.calibrate``)."""
    n = CALIBRATION_IMAGES + 2
    config = replace(profile(ZOO_PROFILE).world(seed=CALIBRATION_SEED), images=n, seed_fraction=CALIBRATION_IMAGES / n,
                     gold_fraction=1 / n, seed_gold_fraction=0.0)
    return _drawn(config, work / "calibration")


def _drawn(config: WorldConfig, path: Path) -> World:
    """The world of ``config`` at ``path``: the one there when it is that world and in place, else
    drawn again (the same images: a world is a function of its config)."""
    if (path / "world.json").is_file() and (existing := World.open(path)).config == config:
        if existing.in_place():
            return existing
        log.warning("%s names its images somewhere else (copied or moved?): drawing it again here", path)
    return make_world(config, path, overwrite=True)


def with_steps(chosen: Profile, names: tuple[str, ...], steps: int) -> Profile:
    """``chosen`` with the bootstrap budget of each of ``names`` set to ``steps`` training steps."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    budgets = dict(chosen.bootstrap)
    for name in names:
        budget = budget_for(chosen.bootstrap, TRAINERS[name])
        if "steps" not in {f.name for f in fields(budget)}:
            raise ValueError(f"--steps cannot set {name}'s budget ({type(budget).__name__} has no steps); "
                             f"leave {name} out of this build (--only the models that train in steps)")
        budgets[name] = replace(budget, steps=steps)
    return replace(chosen, bootstrap=budgets)


def build(work: Path, zoo: Path, only: tuple[str, ...], device: str = "cpu",
          step: Callable[[str], None] | None = None, steps: int | None = None,
          train_only: bool = False) -> dict[str, Card]:
    """Train ``only`` with the zoo profile on its world (resuming what ``work`` holds) and publish
    each into ``zoo``. Models without weights to learn (GrabCut) have no place in a zoo.

    ``steps`` overrides the profile's training steps (the card's command then names it);
    ``train_only`` trains and stops before measuring and publishing (a machine with only torch and
    transformers, a lent GPU: the same command without it, run where the whole engine is
    installed and with ``work`` copied over, measures and publishes without training again)."""
    unknown = [n for n in only if n not in TRAINERS]
    if unknown:
        raise ValueError(f"unknown specialist(s) {unknown}; known: {', '.join(TRAINERS)}")
    wanted = tuple(n for n in (only or TRAINERS) if TRAINERS[n].trains)
    if not wanted:
        raise ValueError(f"{', '.join(only)} learn(s) nothing: a zoo holds trained weights only")
    chosen = profile(ZOO_PROFILE).on(device)
    if steps is not None:
        chosen = with_steps(chosen, wanted, steps)
    world = zoo_world(work)
    calibration = None if train_only else calibration_world(work)
    trained = bootstrap(world, work / "models", chosen, wanted, step, measure=not train_only,
                        calibration=calibration and world_training_set(calibration, ("seed",)))
    if train_only:
        return {}
    return {name: publish(model, world, zoo, budget_for(chosen.bootstrap, TRAINERS[name]), device, steps,
                          calibration=calibration)
            for name, model in trained.models.items()}


def fine_tune_command(base: Card, device: str) -> str:
    """The command that rebuilds a fine-tuned zoo model: its base's, then the fine-tuning."""
    return f"{base.command} && fld zoo build --only {base.name} --fine-tune" + (f" --device {device}" if device != "cpu" else "")


def fine_tune(work: Path, zoo: Path, only: tuple[str, ...], device: str = "cpu",
              step: Callable[[str], None] | None = None) -> dict[str, Card]:
    """Fine-tune each published zoo model of ``only`` (default: each the zoo profile fine-tunes)
    from its weights with the profile's next ``fine_tune`` budget for it (the first its card has not
    had) on the zoo world's seed split, measure it and publish it in its place. Its card keeps the
    models it started from as its earlier stages, and its command rebuilds them all. A model whose
    last stage is not the profile's, or that has had every stage, is refused."""
    chosen = profile(ZOO_PROFILE).on(device)
    names = only or tuple(chosen.fine_tune)
    lacking = [n for n in names if n not in chosen.fine_tune]
    if lacking:
        raise ValueError(f"the zoo profile fine-tunes {', '.join(chosen.fine_tune) or 'nothing'}, not {', '.join(lacking)}")
    world = zoo_world(work)
    published = check(zoo, world.config, names)
    budgets = {}
    for name in names:
        if name not in published:
            raise ZooError(f"{zoo}: no published {name} to fine-tune; build it first with `{rebuild_command(name)}`")
        card, stages = published[name].card, chosen.fine_tune[name]
        done = card.fine_tunings
        if done and card.budget != budget_record(stages[done - 1]):
            raise ZooError(f"{zoo / name}: its last fine-tuning is not the zoo profile's stage {done}; rebuild it with "
                           f"`{_stage_command(card.stages[0].get('command') or rebuild_command(name), name, len(stages))}`")
        if done >= len(stages):
            raise ZooError(f"{zoo / name}: already fine-tuned with every stage of the zoo profile ({len(stages)}); to do "
                           f"it again, rebuild the model it started from with `{card.stages[0].get('command')}`")
        budgets[name] = stages[done]
    gold, seed_gold = gold_stores(world)
    data = world_training_set(world, ("seed",))
    calibration = calibration_world(work)
    held_out = world_training_set(calibration, ("seed",))
    cards = {}
    for name in names:
        base = published[name]
        if step:
            step(f"fine-tune {name} from the zoo (the profile's fine-tuning {base.card.fine_tunings + 1} of "
                 f"{len(chosen.fine_tune[name])}; its card's stage {base.card.fine_tunings + 2})")
        start = Trained(name, work / "models" / "zoo-base" / name,
                        {**install(base, work / "models" / "zoo-base" / name), "name": name, "key": base.card.training_key})
        trained = train_and_measure(TRAINERS[name], data, work / "models" / "fine-tune", budgets[name], gold,
                                    previous=start, device=device, seed_gold=seed_gold,
                                    calibration=held_out)
        cards[name] = publish(trained, world, zoo, budgets[name], device, command=fine_tune_command(base.card, device),
                              stages=[*base.card.stages, base.card.stage()], calibration=calibration)
    return cards


def _stage_command(base: str, name: str, stages: int) -> str:
    """The command that builds ``name`` with ``base`` and fine-tunes it ``stages`` times."""
    return " && ".join([base, *[f"fld zoo build --only {name} --fine-tune"] * stages])
