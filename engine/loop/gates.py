"""Gates: which model's predictions for which task may enter a round, decided from measured gold
quality, so that a weak model cannot degrade the dataset.

For each task, the candidate (the model retrained this round) is compared with the incumbent (the
model whose predictions entered the round before): the candidate replaces it only when its gold
metric is no worse than the incumbent's minus ``tolerance``; and whichever wins must reach the
task's floor and beat the task's trivial answer (the box prior, a constant description) beyond the
noise (a paired bootstrap over the same gold images), or the task is left out of the round. A description model must also write distinct descriptions, name
few objects that are not there, and name more of the objects than the constant description
does (a collapsed captioner once cleared its CIDEr floor); a region captioner must name the
right object for most boxes it describes. A model whose metric another admitted model also
serves (Florence-2's ``<OD>`` beside YOLO) enters only when it is no worse than the best of them
minus ``tolerance``: the round fuses their outputs, and a far weaker one only adds its mistakes
(a Florence-2 with gold detection F1 0.12 beside a YOLO with 0.76 took a round's F1 from 0.76 to
0.55). Every decision is recorded in the round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from engine.dataset.store import Store
from engine.evaluation.evaluate import metric_rows
from engine.evaluation.measure import EarlyStop
from engine.evaluation.noise import Units, change_interval
from engine.evaluation.trivial import SOURCE, trivial_answers, trivial_measurements
from engine.loop.training import Trained
from specialists.training.registry import task_metrics, trainer_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateConfig:
    floors: dict = field(default_factory=lambda: {
        "region-text/detection_f1": 0.1, "region-text/mask_iou": 0.5, "text/brief.cider": 0.1,
        "text/detailed.cider": 0.1, "text/more_detailed.cider": 0.1, "text-phrase-region/grounding_recall@1": 0.2,
        "region-text/ocr_word_f1": 0.2, "region-text/region_caption_word_f1": 0.2,
    })
    tolerance: float = 0.01
    trivial: dict = field(default_factory=dict)
    """The trivial answer's gold value per metric (``engine.evaluation.trivial``): a model must
    beat it, whatever the fixed floor (a constant caption clears CIDEr 0.1 on gold)."""
    min_distinct: float = 0.5
    """Description gates (``text/<granularity>.cider``): distinct descriptions per described gold
    image at least this (the world's own are all distinct; a collapsed captioner's near 0)..."""
    max_hallucination: float = 0.5
    """...a share of the categories they name that are not in the image at most this (the
    constant description's is 0.53-0.57 on the shifted gold)..."""
    recall_over_trivial: bool = True
    """...and more of each image's objects named than the trivial answer names."""
    min_caption_object: float = 0.5
    """Region captions (``region-text/region_caption_word_f1``): the share of described boxes whose
    caption names the right object at least this (a captioner that wrote "a large cyan dotted
    square" for most boxes beat the constant caption's word F1 while naming 11% right)."""
    trivial_units: dict = field(default_factory=dict)
    """The trivial answer's per-image units per metric (``Units.to_dict``): a model must beat it
    beyond the noise, by a paired bootstrap over the gold images both were measured on."""
    early_stop_images: int = 48
    """A candidate's tasks are measured on this many gold images first; one that cannot pass its
    gate there (``EarlyStop``) is not measured on the others. 0: every task on every image."""

    def __post_init__(self) -> None:
        if self.early_stop_images < 0:
            raise ValueError(f"early_stop_images must be >= 0, got {self.early_stop_images}")
        if not 0.0 <= self.tolerance <= 1.0 or any(v < 0.0 for v in self.floors.values()):
            raise ValueError("gate tolerance must be within [0, 1] and floors >= 0")
        if not all(0.0 <= v <= 1.0 for v in (self.min_distinct, self.max_hallucination, self.min_caption_object)):
            raise ValueError("min_distinct, max_hallucination and min_caption_object must be within [0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)

    def bars(self) -> dict[str, float]:
        """Per gated metric, the least value a gate admits (its floor; above the trivial answer's
        value), and the region captioner's least share of right objects."""
        gated = set(task_metrics().values())
        bars = {m: max(self.floors.get(m, 0.0), self.trivial.get(m, 0.0)) for m in gated}
        return {**bars, "region-text/region_caption_object": self.min_caption_object}

    def early_stop(self, beside: Mapping[str, float] | None = None) -> EarlyStop | None:
        """How candidates are measured on gold: stopped early for the tasks they cannot pass, their
        bars raised to ``beside`` (``rival_bars``: what the models measured before them admit)."""
        if not self.early_stop_images:
            return None
        beside = beside or {}
        return EarlyStop({m: max(bar, beside.get(m, bar)) for m, bar in self.bars().items()}, self.early_stop_images)


@dataclass(frozen=True)
class Gate:
    task: str
    """``specialist:task``."""
    metric: str
    candidate: float | None
    incumbent: float | None
    floor: float
    chosen: str
    """``candidate``, ``incumbent`` or ``none`` (the task is left out of the round)."""
    trivial: float | None = None
    """The trivial answer's value, which the chosen model had to beat."""
    refused: str | None = None
    """Why the chosen model was left out although its metric passed (a description guard)."""

    def row(self) -> dict:
        return asdict(self)


def with_trivial(truth: Store, gold: Store, config: GateConfig = GateConfig(),
                 record_in: Store | None = None) -> GateConfig:
    """``config`` whose gates must also beat the trivial answers learnt from the seed truth; with
    ``record_in``, their gold metrics are written to that dataset as round 0 (source ``trivial``)."""
    found = trivial_measurements(truth, gold)
    if record_in is not None:
        with record_in.writer(0) as writer:
            writer.write("metrics", SOURCE, metric_rows(found, 0, SOURCE))
    gated = set(task_metrics().values())
    return replace(config, trivial=trivial_answers(found),
                   trivial_units={m.key: m.units.to_dict() for m in found if m.units is not None and m.key in gated})


def tasks_of(trained: Trained) -> list[str]:
    """``specialist:task`` of each task the trained model can serve."""
    return [f"{trained.name}:{t}" for t in trainer_for(trained.name).served_tasks(trained.manifest)]


def decide(candidates: dict[str, Trained], incumbents: dict[str, Trained], config: GateConfig = GateConfig(),
           quiet: bool = False) -> dict[str, tuple[Gate, Trained | None]]:
    """Per ``specialist:task``: the gate and the model that serves it (None when gated out).

    ``candidates`` are by specialist name; ``incumbents`` by task (the model that served it the
    round before, whether or not its predictions passed the floor); ``quiet``: refusals are not logged."""
    out: dict[str, tuple[Gate, Trained | None]] = {}
    metrics = task_metrics()
    offered = {task: model for model in candidates.values() for task in tasks_of(model)}
    for task in sorted(set(offered) | set(incumbents)):
        metric = metrics[task]
        floor, trivial = config.floors.get(metric, 0.0), config.trivial.get(metric)
        cand, inc = offered.get(task), incumbents.get(task)
        c = cand.gold.get(metric) if cand else None
        i = inc.gold.get(metric) if inc else None
        if c is not None and (i is None or c >= i - config.tolerance):
            chosen, model, value = "candidate", cand, c
        elif i is not None:
            chosen, model, value = "incumbent", inc, i
        else:
            chosen, model, value = "none", None, None
        served, refused = model, None
        if value is None or value < floor or (trivial is not None and value <= trivial):
            chosen, model = "none", None
        elif (refused := within_trivial_noise(metric, model, config) or description_guard(metric, model.gold, config)):
            if not quiet:
                log.info("gate %s: %s", task, refused)
            chosen, model = "none", None
        out[task] = (Gate(task, metric, c, i, floor, chosen, trivial, refused), model if model else served)
    return weaker_companions_out(out, config, quiet)


def rival_bars(measured: dict[str, Trained], config: GateConfig, incumbents: dict[str, Trained] | None = None
               ) -> dict[str, float]:
    """Per gated metric, the least value a model measured after ``measured`` (by specialist; facing
    ``incumbents``, by task, that no later candidate replaces) can enter with beside them: the best
    value their gates admit less ``tolerance`` (``weaker_companions_out`` refuses the rest), or that
    value itself for a task one model a round serves. Florence-2's ``<OD>`` (gold F1 0.15) beside
    a YOLO at 0.78 need not be measured on every gold image to be refused."""
    bars: dict[str, float] = {}
    for task, (gate, _) in decide(measured, incumbents or {}, config, quiet=True).items():
        if gate.chosen == "none":
            continue
        value = gate.candidate if gate.chosen == "candidate" else gate.incumbent
        if value is not None:
            bar = value if _exclusive(task) else value - config.tolerance
            bars[gate.metric] = max(bars.get(gate.metric, bar), bar)
    return bars


def weaker_companions_out(gates: dict[str, tuple[Gate, Trained | None]], config: GateConfig, quiet: bool = False
                          ) -> dict[str, tuple[Gate, Trained | None]]:
    """Refuse each admitted model that is worse than the best admitted model of the same metric by
    more than ``tolerance``, and, for a task one model a round serves (``Task.exclusive``: the
    segmenters), each but the best; the gates as they were otherwise."""
    admitted = {task: (gate, gate.candidate if gate.chosen == "candidate" else gate.incumbent)
                for task, (gate, _) in gates.items() if gate.chosen != "none"}
    out = dict(gates)
    for task, (gate, value) in admitted.items():
        rivals = {t: v for t, (g, v) in admitted.items() if g.metric == gate.metric and t != task and v is not None}
        if not rivals or value is None:
            continue
        best_task = max(rivals, key=rivals.get)
        best = rivals[best_task]
        if _exclusive(task):
            weaker = value < best or (value == best and best_task < task)  # a tie: one of them, always the same
        else:
            weaker = value < best - config.tolerance
        if weaker:
            refused = (f"weaker than {best_task} on the same gold ({gate.metric} {value:.3f} < {best:.3f}): "
                       + ("one model a round serves it" if _exclusive(task) else
                          "fused with it, it would only add its mistakes"))
            if not quiet:
                log.info("gate %s: %s", task, refused)
            out[task] = (replace(gate, chosen="none", refused=refused), gates[task][1])
    return out


def _exclusive(key: str) -> bool:
    name, task = key.split(":", 1)
    return any(t.name == task and t.exclusive for t in trainer_for(name).tasks)


def within_trivial_noise(metric: str, model: Trained, config: GateConfig) -> str | None:
    """Why a model that beats the trivial answer on its point value has not beaten it beyond the
    noise (the paired 95% interval of model - trivial holds 0), or None (beaten, or not testable:
    no per-image units on one side, or too few gold images)."""
    found = change_interval(Units.from_dict(config.trivial_units.get(metric)), model.units(metric))
    if found is None or found.low > 0.0:
        return None
    return f"not beyond the noise of the trivial answer (paired 95% interval of the difference [{found.low:+.3f}, {found.high:+.3f}])"


def description_guard(metric: str, gold: dict[str, float | None], config: GateConfig) -> str | None:
    """Why a description model (of images or of regions) may not enter although its metric passed, or None."""
    if metric == "region-text/region_caption_word_f1":
        named = gold.get("region-text/region_caption_object")
        if named is None or named < config.min_caption_object:
            return f"names the wrong objects (right for {named} of the boxes it describes < {config.min_caption_object})"
        return None
    if not (metric.startswith("text/") and metric.endswith(".cider")):
        return None
    base = metric.removesuffix(".cider")
    distinct, hallucination = gold.get(f"{base}.distinct"), gold.get(f"{base}.hallucination")
    recall, trivial_recall = gold.get(f"{base}.object_recall"), config.trivial.get(f"{base}.object_recall")
    if distinct is None or distinct < config.min_distinct:
        return f"too few distinct descriptions ({distinct} per described image < {config.min_distinct})"
    if hallucination is not None and hallucination > config.max_hallucination:
        return f"names objects that are not there ({hallucination:.3f} of those named > {config.max_hallucination})"
    if config.recall_over_trivial and trivial_recall is not None and (recall is None or recall <= trivial_recall):
        return f"names no more of the objects than the trivial answer (object recall {recall} <= {trivial_recall:.3f})"
    return None


def served(gates: dict[str, tuple[Gate, Trained | None]]) -> dict[str, Trained]:
    """The model of each task that passed its gate."""
    return {task: model for task, (gate, model) in gates.items() if gate.chosen != "none" and model is not None}


def holders(gates: dict[str, tuple[Gate, Trained | None]]) -> dict[str, Trained]:
    """Per task, the best model so far (even if below the floor): next round's incumbent."""
    return {task: model for task, (_, model) in gates.items() if model is not None}
