"""Train any registered specialist on a training set and measure it on the gold split.

Each trained model lives in its own folder with a ``manifest.json`` written last (so a folder
without one is an interrupted training, resumed or redone): what it was trained on (a
fingerprint of the inputs, the settings and the gold split), its weights, training facts, and
its gold metrics, measured through the round's annotation path with the round's filters
(``engine.evaluation.measure``): the number a gate reads is what a round with that model alone
would score. A call whose fingerprint matches an existing manifest reuses it.

Training and measuring are two steps: ``train_model`` writes ``trained.json`` (the key and the
trainer's facts) once the weights are saved, and ``train_and_measure`` measures what it finds
there. So a model can be trained on a machine that has only what training needs (a lent GPU with
torch and transformers; ``fld zoo build --train-only``) and measured where the whole engine is
installed, and a measurement cut short never retrains.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.dataset.store import Store
from engine.evaluation.evaluate import Evaluator, Measurement
from engine.evaluation.measure import EarlyStop, annotate_gold, as_scored, gold_boxes, gold_images, gold_texts, loaded
from engine.evaluation.noise import Units
from engine.loop.machine import machine
from engine.loop.serving import SHARD_SIZE, round_filters, specs
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig
from schemas.hashing import fingerprint
from specialists.base import Specialist
from specialists.training.trainer import Trainer, TrainingSet

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
TRAINED = "trained.json"
TRAINER_VERSION = "4"
"""Bump when training changes what a trained model would be (a zoo card of another version is refused)."""
MEASURE_VERSION = "2"
"""Bump when measuring changes what a trained model's manifest records (its gold metrics): a
manifest of another version is measured again, its training reused (2: grounding given the gold
descriptions)."""


@dataclass
class Trained:
    name: str
    folder: Path
    manifest: dict

    @property
    def weights(self) -> str:
        return self.manifest["weights"]

    @property
    def gold(self) -> dict[str, float | None]:
        """Gold metrics (the target domain's), by ``family/metric``."""
        return self.manifest.get("gold", {})

    def measured(self, split: str = "gold") -> dict[str, dict]:
        """Value and interval of each metric on ``gold`` or ``seed-gold`` (see ``measured``)."""
        return self.manifest.get("measured", {}).get(split, {})

    def units(self, metric: str) -> Units | None:
        """The per-image units of a gold metric a gate reads (to pair it with another answer's)."""
        return Units.from_dict(self.manifest.get("units", {}).get(metric))


def load_trained(folder: Path) -> Trained:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no trained model ({MANIFEST} is missing)")
    manifest = json.loads(path.read_text())
    return Trained(manifest["name"], folder, manifest)


def _keyed(path: Path, key: str) -> dict | None:
    """The JSON at ``path`` when it was written for ``key`` and its weights still exist; None
    otherwise (also when it is unreadable, e.g. a copy cut short: the work is done again)."""
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("%s is unreadable (%s): doing its work again", path, err)
        return None
    if found.get("key") == key and (not found.get("weights") or Path(found["weights"]).exists()):
        log.info("reusing %s trained earlier (%s)", found["name"], path.parent)
        return found
    return None


def _cached(folder: Path, key: str, stop: EarlyStop | None = None, calibration: TrainingSet | None = None) -> Trained | None:
    """The measured model in ``folder`` when it was trained for ``key`` and measured by this code,
    with the same early stop (or none), after calibrating on the same images (or none)."""
    manifest = _keyed(folder / MANIFEST, key)
    if manifest and manifest.get("measure_version", "1") != MEASURE_VERSION:
        log.info("%s was measured by an older evaluation: measuring it again", folder)
        return None
    if manifest and manifest.get("early_stop") != _stop_record(stop):
        log.info("%s was measured with another early stop: measuring it again", folder)
        return None
    if manifest and manifest.get("calibrated_on") != _calibration_record(calibration):
        log.info("%s was calibrated on other images: calibrating and measuring it again", folder)
        return None
    return Trained(manifest["name"], folder, manifest) if manifest else None


def _stop_record(stop: EarlyStop | None) -> dict | None:
    """How a manifest's gold measurement was stopped early (None: every task on every image)."""
    return None if stop is None else {"first": stop.first, "seed": stop.seed, "bars": dict(sorted(stop.bars.items()))}


def _calibration_record(calibration: TrainingSet | None) -> str | None:
    """Which images a manifest's thresholds were chosen on (None: none)."""
    return None if calibration is None else fingerprint(calibration.ids())


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _write_manifest(folder: Path, manifest: dict) -> Trained:
    _write_json(folder / MANIFEST, manifest)
    return Trained(manifest["name"], folder, manifest)


def _family(metric: str) -> str:
    """``region-text/detection_f1`` -> ``region-text/detection``: the metrics that belong together."""
    family, _, name = metric.partition("/")
    return f"{family}/{re.split(r'[_.]', name)[0]}"


def measure_on_gold(trainer: Trainer, manifest: dict, gold: Store, device: str = "cpu",
                    stop: EarlyStop | None = None) -> list[Measurement]:
    """Gold metrics of a trained model's tasks: the model alone in a round, filtered as the round
    filters it; its prompted tasks given the gold boxes and descriptions they take (a segmenter's
    and a region captioner's boxes, a grounder's descriptions). With ``stop``, a task that cannot
    pass its gate on ``stop``'s sample of the gold images is measured on that sample only."""
    tasks = trainer.served_tasks(manifest)
    ids = sorted(gold_images(gold))
    sample = stop.sample(ids) if stop is not None else None
    parser = PhraseParser()
    found: list[Measurement] = []
    for prompted in (False, True):
        group = [t for t in tasks if (t in trainer.prompted(manifest)) == prompted]
        model = _serving(trainer, manifest, group, gold, device)
        if model is None:
            continue
        kept = model.keeps(gold, parser, sample)
        if sample is not None:
            early = Evaluator(gold, images=sample).evaluate(kept)
            hopeless = stop.hopeless(early)
            out = {_family(trainer.metric(t)) for t in group} & {_family(k) for k in hopeless}
            for key, reason in hopeless.items():
                if _family(key) in out:
                    log.info("%s: measured on the sample only: %s", trainer.name, reason)
            found += [m for m in early if _family(m.key) in out]
            if out:  # served again without the tasks measured enough
                group = [t for t in group if _family(trainer.metric(t)) not in out]
                model = _serving(trainer, manifest, group, gold, device)
                if model is None:
                    continue
            chosen = set(sample)
            more = model.keeps(gold, parser, [i for i in ids if i not in chosen])
            # the sample as its tables come from the serving that goes on (one without a grounder
            # of the gold descriptions scores no "grounded" table); the tasks left out are not scored
            kept = {t: pa.concat_tables([kept[t], more[t]]) if t in kept else more[t] for t in more}
        wanted = {_family(trainer.metric(t)) for t in group}
        found += [m for m in Evaluator(gold).evaluate(kept) if _family(m.key) in wanted]
    return found


@dataclass
class _Serving:
    """A model loaded as a round serves ``tasks`` of it (after the gold prompts they take), with
    the round's filters for them."""

    specialists: list[tuple[str, Specialist]]
    filters: FilterConfig

    def keeps(self, gold: Store, parser: PhraseParser, images: list[str] | None) -> dict[str, pa.Table]:
        """What it keeps on the gold images (or on ``images`` of them), as the evaluator scores it."""
        annotated = annotate_gold(self.specialists, gold, self.filters, SHARD_SIZE, parser, images)
        return as_scored(self.specialists, annotated.kept)


def _serving(trainer: Trainer, manifest: dict, tasks: list[str], gold: Store, device: str) -> _Serving | None:
    """The model serving ``tasks`` (all prompted or none), loaded; None when it serves none of them."""
    servings = trainer.serve(manifest, tasks, device) if tasks else []
    if not servings:
        return None
    prompted = any(t in trainer.prompted(manifest) for t in tasks)
    needs = {table for spec in specs(servings) for table in spec.build().needs} if prompted else set()
    given = (make(gold) for table, make in (("regions", gold_boxes), ("texts", gold_texts)) if table in needs)
    return _Serving(loaded(specs(servings), [(g.name, g) for g in given]), round_filters(servings))


def gated_metrics() -> set[str]:
    """The gold metrics that gates read (one per servable task)."""
    from specialists.training.registry import task_metrics

    return set(task_metrics().values())


def measured(found: list[Measurement]) -> dict[str, dict]:
    """A manifest's record of measurements: value and 95% interval (None where it has none)."""
    out = {}
    for m in found:
        interval = m.interval()
        out[m.key] = {"value": m.value, "low": interval.low if interval else None,
                      "high": interval.high if interval else None, "images": m.units.measured if m.units else None}
    return out


def training_key(trainer: Trainer, data: TrainingSet, budget: Any, gold: Store, previous: Trained | None = None,
                 device: str = "cpu", seed_gold: Store | None = None) -> str:
    """What a training's result depends on: its data, settings, starting model and gold splits."""
    before = previous.manifest if previous else None
    return fingerprint({"trainer": TRAINER_VERSION, "name": trainer.name, "images": data.ids(), "counts": data.counts(),
                        "settings": trainer.settings(data, budget, before, device),
                        "previous": before["key"] if before else None, "gold": sorted(gold_images(gold)),
                        "seed_gold": sorted(gold_images(seed_gold)) if seed_gold else None})


def train_model(trainer: Trainer, data: TrainingSet, root: Path, budget: Any, gold: Store,
                previous: Trained | None = None, device: str = "cpu", seed_gold: Store | None = None,
                key: str | None = None) -> Trained:
    """Train ``trainer``'s model into ``root/<name>`` (or find it trained there with the same key):
    unmeasured, its manifest is ``trained.json`` (key, facts, seconds, machine)."""
    key = key or training_key(trainer, data, budget, gold, previous, device, seed_gold)
    folder = Path(root) / trainer.name
    path = folder / TRAINED
    if (found := _keyed(path, key)) is not None:
        return Trained(trainer.name, folder, found)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    facts = trainer.train(data, folder, budget, previous.manifest if previous else None, device)
    manifest = {"name": trainer.name, "key": key, **facts, "seconds": time.monotonic() - start,
                "machine": machine(device)}
    _write_json(path, manifest)
    return Trained(trainer.name, folder, manifest)


def train_and_measure(trainer: Trainer, data: TrainingSet, root: Path, budget: Any, gold: Store,
                      previous: Trained | None = None, device: str = "cpu", seed_gold: Store | None = None,
                      stop: EarlyStop | None = None, calibration: TrainingSet | None = None) -> Trained:
    """``trainer``'s model trained on ``data`` into ``root/<name>`` (reused when its inputs are
    unchanged), calibrated on ``calibration`` when given (``Trainer.calibrate``), measured on
    ``gold`` (with ``stop``, see ``measure_on_gold``) and on the seed domain's ``seed_gold``, when
    given. A model trained on a GPU is measured on the CPU where no GPU is present (inference only)."""
    key = training_key(trainer, data, budget, gold, previous, device, seed_gold)
    folder = Path(root) / trainer.name
    if found := _cached(folder, key, stop, calibration):
        return found
    trained = train_model(trainer, data, root, budget, gold, previous, device, seed_gold, key=key)
    return measure_and_record(trainer, folder, dict(trained.manifest), gold, usable_device(device), seed_gold, stop,
                              calibration)


def usable_device(device: str) -> str:
    """``device``, or the CPU when it names a GPU this machine does not have."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            log.warning("no GPU here: measuring a model trained on %s on the CPU", device)
            return "cpu"
    return device


def adopt_and_measure(trainer: Trainer, facts: dict, source: str, root: Path, gold: Store, device: str = "cpu",
                      seed_gold: Store | None = None, stop: EarlyStop | None = None) -> Trained:
    """A model trained elsewhere (the zoo), whose weights ``facts`` already point into
    ``root/<name>``, measured on ``gold`` (and ``seed_gold``) as a trained one is; ``source``
    (a fingerprint of its card and files) keys the reuse."""
    key = fingerprint({"trainer": TRAINER_VERSION, "name": trainer.name, "adopted": source,
                       "gold": sorted(gold_images(gold)), "seed_gold": sorted(gold_images(seed_gold)) if seed_gold else None})
    folder = Path(root) / trainer.name
    if found := _cached(folder, key, stop):
        return found
    manifest = {"name": trainer.name, "key": key, **facts, "seconds": 0.0}
    return measure_and_record(trainer, folder, manifest, gold, device, seed_gold, stop)


def measure_and_record(trainer: Trainer, folder: Path, manifest: dict, gold: Store, device: str = "cpu",
                       seed_gold: Store | None = None, stop: EarlyStop | None = None,
                       calibration: TrainingSet | None = None) -> Trained:
    """Choose the thresholds of the model of ``manifest`` on ``calibration`` (when given), measure
    it on gold (with ``stop``) and on seed-gold (whole: it gates nothing), and write its manifest, last."""
    if calibration is not None:
        manifest.update(trainer.calibrate(manifest, calibration, device))
    manifest["calibrated_on"] = _calibration_record(calibration)
    on_gold = measure_on_gold(trainer, manifest, gold, device, stop)
    manifest["measure_version"] = MEASURE_VERSION
    manifest["early_stop"] = _stop_record(stop)
    manifest["gold"] = {m.key: m.value for m in on_gold}
    manifest["measured"] = {"gold": measured(on_gold)}
    manifest["units"] = {m.key: m.units.to_dict() for m in on_gold if m.units is not None and m.key in gated_metrics()}
    if seed_gold is not None:
        manifest["measured"]["seed-gold"] = measured(measure_on_gold(trainer, manifest, seed_gold, device))
    return _write_manifest(folder, manifest)
