"""Train the embedded default's specialists on a training set and measure each on the gold split.

Each trained model lives in its own folder with a ``manifest.json`` written last (so a folder
without one is an interrupted training, resumed or redone): what it was trained on (a
fingerprint of the inputs and settings), its weights' path and version, training statistics,
and its gold metrics. A call whose fingerprint matches an existing manifest reuses it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from engine.evaluate import Evaluator
from engine.hashing import fingerprint
from engine.local import predict_local
from engine.profiles import TrainingBudget
from engine.sources import load_rgb
from engine.store import Store
from engine.training_set import TrainingSet

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
TRAINER_VERSION = "1"
"""Bump when training code changes what a trained model would be, so cached models are redone."""
SAM_ARCH = "tiny"


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
        return self.manifest.get("gold", {})


def _key(name: str, tset: TrainingSet, settings: dict, previous: Trained | None) -> str:
    return fingerprint({"trainer": TRAINER_VERSION, "name": name, "images": tset.ids(), "counts": tset.counts(),
                        "settings": settings, "previous": previous.manifest["key"] if previous else None})


def load_trained(folder: Path) -> Trained:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no trained model ({MANIFEST} is missing)")
    manifest = json.loads(path.read_text())
    return Trained(manifest["name"], folder, manifest)


def _cached(folder: Path, key: str) -> Trained | None:
    path = folder / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("key") == key and (not manifest["weights"] or Path(manifest["weights"]).exists()):
            log.info("reusing %s trained earlier (%s)", manifest["name"], folder)
            return Trained(manifest["name"], folder, manifest)
    return None


def _write_manifest(folder: Path, manifest: dict) -> Trained:
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, folder / MANIFEST)
    return Trained(manifest["name"], folder, manifest)


def _loaded(specialist):
    specialist.load()
    return specialist


def _gold_metrics(specialists, gold_uris: dict[str, str], gold: Store, keep: Callable[[str], bool], load: bool = True) -> dict:
    for s in specialists:
        if load:
            s.load()
    predictions = predict_local(specialists, gold_uris)
    return {f"{f}/{m}": v for f, m, v in Evaluator(gold).evaluate(predictions) if keep(f"{f}/{m}")}


# -- YOLO -----------------------------------------------------------------------------------------
def train_detector(tset: TrainingSet, root: Path, budget: TrainingBudget, gold_uris: dict[str, str], gold: Store,
                   previous: Trained | None = None, names: list[str] | None = None, device: str = "cpu",
                   exhaustive: set[str] | None = None) -> Trained:
    """``exhaustive``: images whose annotations list every object (truth), so an image of them
    without objects is a true background; other images (a round's kept annotations) train the
    detector only where they hold objects. None: every image is exhaustive."""
    from specialists.training.yolo_train import (
        YoloTrainConfig, calibrate_confidence, split_ids, train_yolo, write_yolo_dataset,
    )
    from specialists.yolo import YoloConfig, YoloDetector

    regions = tset.tables["regions"]
    objects = regions.filter(pc.equal(regions.column("kind"), "object"))
    names = names or (previous.manifest["names"] if previous else sorted(set(objects.column("label").drop_null().to_pylist())))
    if exhaustive is not None:  # a missing pseudo-label is not a background
        has_objects = set(objects.column("image_id").to_pylist())
        keep = {i: u for i, u in tset.uris.items() if i in exhaustive or i in has_objects}
        tset = TrainingSet(keep, {i: tset.sizes[i] for i in keep}, tset.tables)
    if not names:
        raise ValueError("no object regions to train the detector on")
    config = YoloTrainConfig(model=previous.weights if previous else "yolov8n.yaml", epochs=budget.yolo_epochs,
                             imgsz=budget.yolo_imgsz, device=device, lr0=0.003 if previous is None else 0.001)
    key = _key("yolo", tset, {**config.to_dict(), "names": names, "model": "previous" if previous else config.model}, previous)
    folder = root / "yolo"
    if found := _cached(folder, key):
        return found
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    data = write_yolo_dataset(objects, tset.uris, tset.sizes, names, folder / "dataset", config.val_fraction)
    weights = train_yolo(data, folder, config)
    seconds = time.monotonic() - start
    # the confidence threshold is chosen on the seed's val split (never gold); the round's filter
    # keeps this detector's boxes from it, and gold is measured at it: the gate sees what enters
    _, val_ids = split_ids(list(tset.uris), config.val_fraction)
    raw = predict_local([_loaded(YoloDetector(YoloConfig(weights=str(weights), imgsz=budget.yolo_imgsz, device=device,
                                                         conf=0.01)))], {i: tset.uris[i] for i in val_ids})
    conf, val_f1 = calibrate_confidence(raw["regions"], objects, val_ids)
    detector = YoloDetector(YoloConfig(weights=str(weights), imgsz=budget.yolo_imgsz, device=device, conf=conf))
    metrics = _gold_metrics([detector], gold_uris, gold, lambda k: k.startswith("region-text/detection"))
    return _write_manifest(folder, {"name": "yolo", "key": key, "weights": str(weights), "names": names,
                                    "imgsz": budget.yolo_imgsz, "conf": conf, "val_f1": val_f1, "config": config.to_dict(), "train_images": len(tset),
                                    "train_objects": objects.num_rows, "seconds": seconds, "gold": metrics})


# -- SAM --------------------------------------------------------------------------------------------
def train_segmenter(tset: TrainingSet, root: Path, budget: TrainingBudget, gold_uris: dict[str, str], gold: Store,
                    previous: Trained | None = None, device: str = "cpu") -> Trained:

    from schemas.validate import box_array
    from specialists.sam import SamConfig, SamSegmenter, load_sam
    from specialists.training.sam_train import SamSample, SamTrainConfig, train_sam

    regions = tset.tables["regions"]
    masked = regions.filter(pc.and_(pc.equal(regions.column("kind"), "object"), pc.is_valid(regions.column("mask"))))
    config = SamTrainConfig(steps=budget.sam_steps, device=device, lr=1e-3 if previous is None else 3e-4)
    key = _key("sam", tset, {**config.to_dict(), "arch": SAM_ARCH}, previous)
    folder = root / "sam"
    if found := _cached(folder, key):
        return found
    if masked.num_rows == 0:
        raise ValueError("no object regions with masks to train the segmenter on")
    folder.mkdir(parents=True, exist_ok=True)
    by_image: dict[str, list[int]] = {}
    for k, image_id in enumerate(masked.column("image_id").to_pylist()):
        by_image.setdefault(image_id, []).append(k)
    boxes, masks = box_array(masked.column("box")), masked.column("mask").to_pylist()
    samples = [SamSample(load_rgb(tset.uris[i]), boxes[rows], [masks[k] for k in rows]) for i, rows in by_image.items()]
    sam = load_sam(SamConfig(checkpoint=previous.weights if previous else None, model_type=SAM_ARCH))
    stats = train_sam(sam, samples, folder, config)
    weights = folder / "sam.pth"
    segmenter = SamSegmenter(SamConfig(checkpoint=str(weights), model_type=SAM_ARCH, device=device))
    truth_boxes = _TruthBoxes(gold)
    metrics = _gold_metrics([truth_boxes, segmenter], gold_uris, gold, lambda k: k == "region-text/mask_iou")
    return _write_manifest(folder, {"name": "sam", "key": key, "weights": str(weights), "model_type": SAM_ARCH,
                                    "config": config.to_dict(), "train_masks": masked.num_rows, **stats,
                                    "gold": metrics})


def measure_grabcut(root: Path, gold_uris: dict[str, str], gold: Store, iterations: int = 3) -> Trained:
    """GrabCut needs no training: it is measured on gold like the trained segmenter, so the gate
    can choose between them."""
    from specialists.sam import GrabCutConfig, GrabCutSegmenter

    key = fingerprint({"trainer": TRAINER_VERSION, "name": "grabcut", "iterations": iterations, "gold": sorted(gold_uris)})
    folder = root / "grabcut"
    if found := _cached(folder, key):
        return found
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    metrics = _gold_metrics([_TruthBoxes(gold), GrabCutSegmenter(GrabCutConfig(iterations=iterations))], gold_uris,
                            gold, lambda k: k == "region-text/mask_iou")
    return _write_manifest(folder, {"name": "grabcut", "key": key, "weights": "", "iterations": iterations,
                                    "seconds": time.monotonic() - start, "gold": metrics})


class _TruthBoxes:
    """Gold boxes as prompts, to measure a segmenter alone (mask IoU given perfect boxes)."""

    name, role, produces, needs = "gold-boxes", "detector", ("regions",), ()

    def __init__(self, gold: Store):

        regions = gold.read("regions")
        self.regions = regions.filter(pc.equal(regions.column("kind"), "object"))

    def load(self) -> None:
        pass

    def predict(self, batch):
        import pyarrow as pa

        rows = self.regions.filter(pc.is_in(self.regions.column("image_id"), pa.array(batch.image_ids, pa.string())))
        for name, values in (("mask", pa.nulls(rows.num_rows, rows.schema.field("mask").type)),
                             ("score", pa.array([1.0] * rows.num_rows, pa.float32()))):
            rows = rows.set_column(rows.schema.get_field_index(name), name, values)
        return {"regions": rows}


# -- Florence-2 -----------------------------------------------------------------------------------
def train_captioner(tset: TrainingSet, root: Path, budget: TrainingBudget, gold_uris: dict[str, str], gold: Store,
                    previous: Trained | None = None, pretrained: str | None = None, device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> Trained:
    """Florence-2 on the training set's multitask examples: from ``previous`` (a refinement), from
    a user's ``pretrained`` checkpoint folder, or built from nothing (tokenizer included)."""
    from specialists.base import weights_version
    from specialists.florence2 import load_florence2
    from specialists.florence2_build import SIZES, build_model, build_processor, save_checkpoint, train_tokenizer
    from specialists.training.florence2_examples import build_examples
    from specialists.training.florence2_train import Florence2TrainConfig, train_florence2

    examples = build_examples(tset.tables["texts"], tset.tables["regions"], tset.tables["triplets"], tset.sizes,
                              budget.florence2_tasks)
    present = sorted({e.task for e in examples})
    missing = [t for t in budget.florence2_tasks if t not in present]
    if missing:
        log.warning("Florence-2: no kept annotations for %s; training on %s only", ", ".join(missing), ", ".join(present) or "nothing")
    recipe = dict(budget.florence2_recipe)
    if previous is not None or pretrained is not None:
        recipe.pop("vision_steps", None)  # the vision tower is warm already
    config = Florence2TrainConfig(steps=budget.florence2_steps, batch_size=budget.florence2_batch, device=device,
                                  lr=1e-3 if previous is None and pretrained is None else 3e-4,
                                  save_every=max(25, budget.florence2_steps // 8), **recipe)
    start_from = previous.weights if previous else pretrained
    key = _key("florence2", tset, {**config.to_dict(), "size": budget.florence2_size, "tasks": present,
                                    "from": start_from}, previous)
    folder = root / "florence2"
    if found := _cached(folder, key):
        return found
    if not examples:
        raise ValueError("no annotations of any Florence-2 task to train on")
    folder.mkdir(parents=True, exist_ok=True)
    if start_from:
        model, processor = load_florence2(start_from, device)
        fresh = False
    else:
        corpus = tset.tables["texts"].column("text").to_pylist() + tset.tables["regions"].column("label").drop_null().to_pylist()
        tokenizer = train_tokenizer(corpus, vocab_size=2000)
        size = SIZES[budget.florence2_size]
        processor = build_processor(tokenizer, size.image_size, size.stride)
        model = build_model(size, tokenizer)
        fresh = True
    images = {i: load_rgb(tset.uris[i]) for i in {e.image_id for e in examples}}
    result = train_florence2(model, processor, examples, images, folder / "state", config, fresh=fresh, progress=progress)
    checkpoint = save_checkpoint(model, processor, folder / "checkpoint")
    metrics = florence2_on_gold(model, processor, present, gold_uris, gold, device, version=weights_version(checkpoint))
    return _write_manifest(folder, {"name": "florence2", "key": key, "weights": str(checkpoint), "tasks": present,
                                    "missing_tasks": missing, "examples": len(examples), "task_counts": result.tasks,
                                    "config": config.to_dict(), "steps": result.steps, "resumed_from": result.resumed_from,
                                    "seconds": result.seconds, "examples_per_second": result.examples_per_second,
                                    "gold": metrics})


def florence2_on_gold(model, processor, tasks: list[str], gold_uris: dict[str, str], gold: Store, device: str = "cpu",
                      version: str = "in-memory") -> dict[str, float | None]:
    """Gold metrics of a Florence-2 (in memory) on ``tasks``; grounding grounds its own captions."""
    from specialists.florence2 import Florence2Config, Florence2Specialist

    def specialist(tasks: tuple[str, ...], max_new_tokens: int, role: str) -> Florence2Specialist:
        s = Florence2Specialist(Florence2Config(checkpoint="in-memory", device=device, batch_size=32, tasks=tasks,
                                                max_new_tokens=max_new_tokens))
        s.model, s.processor, s._version, s.role = model, processor, version, role
        return s

    grounding = "<CAPTION_TO_PHRASE_GROUNDING>"
    own = tuple(t for t in tasks if t != grounding)
    if not own:
        return {}  # grounding alone has no captions of its own to ground
    specialists = [specialist(own, 128, "captioner")]
    if grounding in tasks:
        specialists.append(specialist((grounding,), 64, "grounder"))
    return _gold_metrics(specialists, gold_uris, gold, lambda k: not k.startswith(("region-text/ocr", "region-text/mask")),
                         load=False)


def gold_images(gold: Store) -> dict[str, str]:
    images = gold.read("images")
    return dict(zip(images.column("image_id").to_pylist(), images.column("uri").to_pylist()))

