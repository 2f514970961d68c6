"""Rounds of the data engine built from trained models: the specialists' round (round 1, the
bootstrapped models) and refinement rounds (retrain on the round before, gate, relabel, merge,
evaluate), as FLD-5B's iterative refinement.

A round's config is written to ``<data>/configs/round-<r>.json`` so that the round can be rerun
(and resumed) exactly; its gates go to the ``metrics`` table (family ``gates``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from engine.bootstrap import ModelSet, models_dir
from engine.gates import Gate, GateConfig, decide, holders, served
from engine.gold import GoldGuard
from engine.profiles import Profile
from engine.round_config import RoundConfig, SpecialistSpec
from engine.specialist_training import (
    Trained, gold_images, load_trained, train_captioner, train_detector, train_segmenter,
)
from engine.store import Store, StoreError
from engine.training_set import load_training_set
from schemas import schema_for

log = logging.getLogger(__name__)
CAPTION_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
GROUNDING = "<CAPTION_TO_PHRASE_GROUNDING>"
STATE = "state.json"


def config_path(data: str | Path, round_id: int) -> Path:
    return Path(data) / "configs" / f"round-{round_id}.json"


def round_config(gates: dict[str, tuple[Gate, Trained | None]], shard_size: int = 16, ocr: bool = True) -> RoundConfig:
    """The round's specialists: each gated-in task served by the model that won its gate, plus
    RapidOCR (weights shipped, not retrained; ``ocr=False`` when its rows are carried over) and
    the spaCy label grounder."""
    specs = [SpecialistSpec("rapidocr", {"threads": 1})] if ocr else []
    thresholds: dict[str, float] = {}
    served_by = served(gates)
    if yolo := served_by.get("yolo:<OD>"):
        conf = yolo.manifest.get("conf", 0.25)
        specs.append(SpecialistSpec("yolo", {"weights": yolo.weights, "imgsz": yolo.manifest["imgsz"], "conf": conf}))
        thresholds["yolo"] = conf  # calibrated on the seed's val split when it was trained
    segmenters = [served_by[t] for t in ("sam:<SEG>", "grabcut:<SEG>") if t in served_by]
    if segmenters:  # one segmenter a round (both would mask the same boxes): the better on gold
        best = max(segmenters, key=lambda m: m.gold.get("region-text/mask_iou") or 0.0)
        if best.name == "sam":
            specs.append(SpecialistSpec("sam", {"checkpoint": best.weights, "model_type": best.manifest["model_type"]}))
        else:
            specs.append(SpecialistSpec("grabcut", {"iterations": best.manifest["iterations"]}))
    by_checkpoint: dict[str, list[str]] = {}
    for task, model in served_by.items():
        if task.startswith("florence2:") and task != f"florence2:{GROUNDING}":
            by_checkpoint.setdefault(model.weights, []).append(task.split(":", 1)[1])
    for k, (checkpoint, tasks) in enumerate(sorted(by_checkpoint.items())):
        specs.append(SpecialistSpec("florence2", {"checkpoint": checkpoint, "tasks": sorted(tasks), "max_new_tokens": 128,
                                                  "batch_size": 16}, key=f"florence2-{k}" if k else "florence2"))
    captions = any(t in CAPTION_TASKS for ts in by_checkpoint.values() for t in ts)
    if captions and (grounder := served_by.get(f"florence2:{GROUNDING}")):
        specs.append(SpecialistSpec("florence2", {"checkpoint": grounder.weights, "tasks": [GROUNDING],
                                                  "max_new_tokens": 64, "batch_size": 16}, key="florence2-grounder"))
    if captions and (yolo or "florence2:<OD>" in served_by):
        specs.append(SpecialistSpec("label-grounder", {}))
    return RoundConfig.from_dict({"specialists": [s.__dict__ for s in specs], "shard_size": shard_size,
                                  "splits": ["pool", "gold"],
                                  "filters": {"fusion": {"priority": ["yolo", "florence2"]},
                                              "regions": {"min_score_by_specialist": thresholds}}})


def write_round_config(data: str | Path, round_id: int, config: RoundConfig) -> Path:
    path = config_path(data, round_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json.loads(config.to_json()), indent=2))
    return path


def gate_rows(gates: dict[str, tuple[Gate, Trained | None]], round_id: int) -> pa.Table:
    """Per gate: ``<task>`` 1.0 when its predictions enter the round (else 0.0), and the gold
    metric of the ``<task>.candidate`` and ``<task>.incumbent`` it was decided on."""
    rows = []
    for task, (gate, _) in sorted(gates.items()):
        for metric, value in ((task, 0.0 if gate.chosen == "none" else 1.0), (f"{task}.candidate", gate.candidate),
                              (f"{task}.incumbent", gate.incumbent)):
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
        path = models_dir(models_root, round_id) / STATE
        if not path.is_file():
            raise StoreError(f"no models recorded for round {round_id} in {models_root} ({path} is missing)")
        state = json.loads(path.read_text())
        load = lambda folder: load_trained(Path(folder))  # noqa: E731
        trained = {n: load(f) for n, f in state["trained"].items()}
        holders = {k: load(f) for k, f in state["holders"].items()}
        gates = {k: (Gate(**g), holders.get(k)) for k, g in state["gates"].items()}
        return cls(state["round"], trained, holders, gates, Path(state["config"]))


def first_round(data: str | Path, models_root: str | Path, bootstrapped: ModelSet,
                gate_config: GateConfig = GateConfig()) -> Refinement:
    """Round 1's config: the bootstrapped models, each task gated on its own gold quality."""
    gates = decide(bootstrapped.models, {}, gate_config)
    write_gates(Store(data), 1, gates)
    result = Refinement(1, dict(bootstrapped.models), holders(gates), gates,
                        write_round_config(data, 1, round_config(gates)))
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
    kept = load_training_set(store, round_id - 1, ("pool",), guard)
    seed = load_training_set(seed_truth, 0, ("seed",), guard)
    tset = seed.merged(kept)
    log.info("round %d trains on %d images (%d seed, %d pool): %s", round_id, len(tset), len(seed), len(kept), tset.counts())
    root, budget, device = models_dir(models_root, round_id), profile.refine, profile.device
    gold_uris = gold_images(gold)
    candidates: dict[str, Trained] = {}
    for name, train in (("yolo", train_detector), ("sam", train_segmenter), ("florence2", train_captioner)):
        if step:
            step(f"round {round_id}: retrain {name}")
        try:
            extra = {"exhaustive": set(seed.uris)} if name == "yolo" else {}
            candidates[name] = train(tset, root, budget, gold_uris, gold, previous=previous.trained.get(name), device=device,
                                     **extra)
        except ValueError as err:  # e.g. no kept annotations for it: the previous model stays
            log.warning("round %d: %s not retrained: %s", round_id, name, err)
    gates = decide(candidates, previous.holders, gate_config)
    write_gates(store, round_id, gates)
    try:
        config = round_config(gates, ocr=False)
    except ValueError:  # every task gated out: RapidOCR runs again so that the round is not empty
        config = round_config(gates, ocr=True)
    result = Refinement(round_id, {**previous.trained, **candidates}, holders(gates), gates,
                        write_round_config(data, round_id, config))
    result.save(models_root)
    return result


CARRIED = ("rapidocr",)
"""Specialists a refinement round does not rerun: their weights never change, so their kept rows
of the round before are its rows too (copied, not recomputed)."""


def carry_unchanged(data: str | Path, round_id: int, specialists: tuple[str, ...] = CARRIED) -> int:
    """Copy the kept rows of ``specialists`` (those the round's config did not run) from round
    ``round_id - 1`` into round ``round_id``."""
    import pyarrow.compute as pc

    ran = {s["name"] for s in json.loads(config_path(data, round_id).read_text())["specialists"]}
    specialists = tuple(s for s in specialists if s not in ran)
    store = Store(data)
    with store.writer(round_id) as writer:
        total = 0
        for table in ("texts", "regions", "triplets"):
            rows = store.read(table, round_id - 1)
            rows = rows.filter(pc.is_in(rows.column("specialist"), pa.array(specialists, pa.string())))
            if rows.num_rows:
                rows = rows.set_column(rows.schema.get_field_index("round"), "round",
                                       pa.array([round_id] * rows.num_rows, pa.int32()))
                writer.write(table, "carried", rows)
                total += rows.num_rows
    return total
