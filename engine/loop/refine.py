"""Rounds of the data engine built from trained models: the specialists' round (round 1, the
bootstrapped models) and refinement rounds (retrain on the round before, gate, relabel, merge,
evaluate), as FLD-5B's iterative refinement.

A round's config is written to ``<data>/configs/round-<r>.json`` so that the round can be rerun
(and resumed) exactly; its gates go to the ``metrics`` table (family ``gates``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from engine.dataset.store import Store, StoreError
from engine.evaluation.gold import GoldGuard
from engine.loop.bootstrap import ModelSet, models_dir
from engine.loop.gates import Gate, GateConfig, decide, holders, rival_bars, served
from engine.loop.profiles import Profile, budget_for
from engine.loop.serving import round_config as serving_round_config
from engine.loop.serving import specs
from engine.loop.training import Trained, load_trained, train_and_measure
from engine.loop.training_set import load_training_set
from engine.review.queue import reviewed_images
from engine.round.config import RoundConfig
from schemas import schema_for
from specialists.florence2 import GRANULARITY
from specialists.training.registry import TRAINERS, trainer_for
from specialists.training.trainer import Serving

log = logging.getLogger(__name__)
CAPTION_TASKS = tuple(GRANULARITY)
STATE = "state.json"


def config_path(data: str | Path, round_id: int) -> Path:
    return Path(data) / "configs" / f"round-{round_id}.json"


FIXED = (Serving("rapidocr", {"threads": 1}, reads_text=True),)
"""Specialists a round runs as they are (weights shipped in their package, never retrained)."""
LABEL_GROUNDER = Serving("label-grounder", {})
"""Grounds descriptions' noun phrases to object boxes whose label matches: added to a round that
both describes images and detects objects."""


def round_config(gates: dict[str, tuple[Gate, Trained | None]], device: str = "cpu") -> RoundConfig:
    """The round's specialists: each gated-in task served by the model that won its gate (each
    model as its trainer serves it), the fixed specialists (RapidOCR, in every round: its text
    judges the text region captions quote, and it costs a few seconds a round) and, when the
    round both describes and detects, the label grounder."""
    served_by = served(gates)
    by_model: dict[Path, tuple[Trained, list[str]]] = {}
    for key, model in sorted(served_by.items()):
        by_model.setdefault(model.folder, (model, []))[1].append(key.split(":", 1)[1])
    servings = list(FIXED)
    for model, tasks in by_model.values():
        servings += trainer_for(model.name).serve(model.manifest, tasks, device)
    tasks = {key.split(":", 1)[1] for key in served_by}
    if tasks & set(CAPTION_TASKS) and "<OD>" in tasks:
        servings.append(LABEL_GROUNDER)
    return serving_round_config(_with_prompts(servings))


def _with_prompts(servings: list[Serving]) -> list[Serving]:
    """The servings whose needed tables another serving makes: a segmenter with nothing that
    proposes regions has nothing to mask, and is left out rather than refused."""
    built = [spec.build() for spec in specs(servings)]
    made_by_others = [{t for j, other in enumerate(built) if j != k for t in other.produces} for k in range(len(built))]
    return [s for s, b, made in zip(servings, built, made_by_others) if set(b.needs) <= made]


def write_round_config(data: str | Path, round_id: int, config: RoundConfig) -> Path:
    path = config_path(data, round_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json.loads(config.to_json()), indent=2))
    return path


def gate_rows(gates: dict[str, tuple[Gate, Trained | None]], round_id: int) -> pa.Table:
    """Per gate: ``<task>`` 1.0 when its predictions enter the round (else 0.0), and the gold
    metric of the ``<task>.candidate`` and ``<task>.incumbent`` it was decided on, and of the
    ``<task>.trivial`` answer the winner had to beat."""
    rows = []
    for task, (gate, _) in sorted(gates.items()):
        for metric, value in ((task, 0.0 if gate.chosen == "none" else 1.0), (f"{task}.candidate", gate.candidate),
                              (f"{task}.incumbent", gate.incumbent), (f"{task}.trivial", gate.trivial)):
            rows.append({"round": round_id, "split": "gold", "family": "gates", "metric": metric,
                         "value": value, "source": "gate"})
    return pa.Table.from_pylist(rows, schema=schema_for("metrics"))


def write_gates(store: Store, round_id: int, gates) -> None:
    with store.writer(round_id) as writer:
        writer.write("metrics", "gates", gate_rows(gates, round_id))


@dataclass
class Refinement:
    """A round's models: the latest trained of each specialist (what the next round retrains from)
    and, per task, the best model so far (the next round's incumbent); with the gates decided."""

    round: int
    trained: dict[str, Trained]
    holders: dict[str, Trained]
    gates: dict[str, tuple[Gate, Trained | None]]
    config: Path

    def save(self, models_root: str | Path) -> Path:
        path = models_dir(models_root, self.round) / STATE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"round": self.round, "config": str(self.config),
                                    "trained": {n: str(t.folder) for n, t in self.trained.items()},
                                    "holders": {k: str(t.folder) for k, t in self.holders.items()},
                                    "gates": {k: g.row() for k, (g, _) in self.gates.items()}}, indent=2))
        return path

    @classmethod
    def load(cls, models_root: str | Path, round_id: int) -> Refinement:
        """The models of round ``round_id``, or of the latest round before it that trained any (a
        review round trains none: the round under it holds its models)."""
        path = next((p for r in range(round_id, 0, -1) for p in [models_dir(models_root, r) / STATE] if p.is_file()),
                    models_dir(models_root, round_id) / STATE)
        if not path.is_file():
            raise StoreError(f"no models recorded for round {round_id} in {models_root} ({path} is missing)")
        state = json.loads(path.read_text())
        load = lambda folder: load_trained(Path(folder))  # noqa: E731
        trained = {n: load(f) for n, f in state["trained"].items()}
        holders = {k: load(f) for k, f in state["holders"].items()}
        gates = {k: (Gate(**g), holders.get(k)) for k, g in state["gates"].items()}
        return cls(state["round"], trained, holders, gates, Path(state["config"]))


def first_round(data: str | Path, models_root: str | Path, bootstrapped: ModelSet,
                gate_config: GateConfig = GateConfig(), device: str = "cpu") -> Refinement:
    """Round 1's config: the bootstrapped models, each task gated on its own gold quality."""
    gates = decide(bootstrapped.models, {}, gate_config)
    write_gates(Store(data), 1, gates)
    result = Refinement(1, dict(bootstrapped.models), holders(gates), gates,
                        write_round_config(data, 1, round_config(gates, device=device)))
    result.save(models_root)
    return result


def prepare_refinement(data: str | Path, models_root: str | Path, round_id: int, seed_truth: Store, gold: Store,
                       profile: Profile, gate_config: GateConfig = GateConfig(),
                       step: Callable[[str], None] | None = None) -> Refinement:
    """Retrain every specialist on round ``round_id - 1``'s kept annotations (plus the seed truth),
    from its previous weights; gate each task against the model that served it; write round
    ``round_id``'s config."""
    previous = Refinement.load(models_root, round_id - 1)
    store = Store(data)
    guard = GoldGuard.from_stores(store, gold)
    kept = load_training_set(store, round_id - 1, ("pool",), guard, exhaustive=False)
    kept = dataclasses.replace(kept, exhaustive=frozenset(reviewed_images(store)) & set(kept.uris))  # a person's answer is whole
    seed = load_training_set(seed_truth, 0, ("seed",), guard)
    tset = seed.merged(kept)
    log.info("round %d trains on %d images (%d seed, %d pool): %s", round_id, len(tset), len(seed), len(kept), tset.counts())
    root, device = models_dir(models_root, round_id), profile.device
    candidates: dict[str, Trained] = {}
    settled = {name for name, trainer in TRAINERS.items() if not trainer.trains}  # whose model this round is known
    for name, trainer in TRAINERS.items():
        if not trainer.trains:
            continue  # measured once at bootstrap; its model stays what it was
        if step:
            step(f"round {round_id}: retrain {name}")
        standing = {task: model for task, model in previous.holders.items() if task.split(":", 1)[0] in settled}
        try:
            candidates[name] = train_and_measure(trainer, tset, root, budget_for(profile.refine, trainer), gold,
                                                 previous=previous.trained.get(name), device=device,
                                                 stop=gate_config.early_stop(rival_bars(candidates, gate_config, standing)))
        except ValueError as err:  # e.g. no kept annotations for it: the previous model stays
            log.warning("round %d: %s not retrained: %s", round_id, name, err)
        settled.add(name)
    gates = decide(candidates, previous.holders, gate_config)
    write_gates(store, round_id, gates)
    config = round_config(gates, device=device)
    result = Refinement(round_id, {**previous.trained, **candidates}, holders(gates), gates,
                        write_round_config(data, round_id, config))
    result.save(models_root)
    return result

