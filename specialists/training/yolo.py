"""Training an ultralytics YOLO detector on a round's object regions (from ``yolov8n.yaml`` or from
earlier weights), offline.

The regions become an ultralytics dataset (``images/`` links, ``labels/`` text files of
``class cx cy w h`` normalised, ``data.yaml``); ultralytics' own trainer does the rest. The
class list is fixed by the caller, so a detector retrained on a later round keeps its class ids.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.geometry import box_array
from specialists.training.calibration import calibrate_confidence, detect, objects as object_regions
from specialists.training.trainer import Serving, Task, Trainer, TrainingSet

log = logging.getLogger(__name__)
FONT_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf")


@dataclass(frozen=True)
class YoloTrainConfig:
    model: str = "yolov8n.yaml"
    """A model .yaml (random start) or a .pt to fine-tune."""
    epochs: int = 20
    imgsz: int = 320
    batch: int = 16
    val_fraction: float = 0.1
    lr0: float = 0.003
    optimizer: str = "AdamW"
    """Named, not ultralytics' "auto" (which picks a small AdamW rate for short runs and ignores lr0)."""
    warmup_epochs: float = 1.0
    device: str = "cpu"
    seed: int = 0
    mosaic: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.imgsz < 32 or self.imgsz % 32:
            raise ValueError("epochs and batch must be >= 1; imgsz a multiple of 32")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be within (0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


def provide_font() -> None:
    """ultralytics downloads Arial.ttf when it checks a dataset; give it a local font instead."""
    from ultralytics.utils import USER_CONFIG_DIR

    target = Path(USER_CONFIG_DIR) / "Arial.ttf"
    if target.exists():
        return
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(candidate, target)
            return
    log.warning("no local TrueType font found; ultralytics may try to download Arial.ttf")


def split_ids(ids: list[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) image ids: a seeded permutation, the same for the same ids."""
    ids = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = max(1, int(round(len(ids) * val_fraction)))
    val = {ids[k] for k in order[:n_val]}
    return [i for i in ids if i not in val], [i for i in ids if i in val]

LINK_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
"""Suffixes ultralytics reads an image link by; any other name is linked as ``.jpg`` (it sniffs the bytes)."""


def write_yolo_dataset(regions: pa.Table, uris: dict[str, str], sizes: dict[str, tuple[int, int]],
                       names: list[str], out: Path, val_fraction: float = 0.1, seed: int = 0) -> Path:
    """An ultralytics dataset of the ``object`` regions of the images in ``uris``; returns data.yaml.

    Images with no kept object become background images (an empty label file), which teaches the
    detector that they are empty. Labels not in ``names`` are skipped with a warning."""
    objects = object_regions(regions)
    boxes = box_array(objects.column("box"))
    per_image: dict[str, list[str]] = {i: [] for i in uris}
    code = {n: k for k, n in enumerate(names)}
    unknown: set[str] = set()
    for image_id, label, box in zip(objects.column("image_id").to_pylist(), objects.column("label").to_pylist(), boxes):
        if image_id not in per_image:
            continue
        if label not in code:
            unknown.add(str(label))
            continue
        w, h = sizes[image_id]
        x1, y1, x2, y2 = np.clip(box, 0, [w, h, w, h])
        if x2 > x1 and y2 > y1:
            per_image[image_id].append(f"{code[label]} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                                       f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    if unknown:
        log.warning("YOLO dataset: skipped labels outside the class list: %s", ", ".join(sorted(unknown)))
    if out.exists():
        shutil.rmtree(out)
    ids = sorted(per_image)
    _, val = split_ids(ids, val_fraction, seed)
    val = set(val)
    for k, image_id in enumerate(ids):
        part = "val" if image_id in val else "train"
        source = Path(uris[image_id])
        (out / "images" / part).mkdir(parents=True, exist_ok=True)
        (out / "labels" / part).mkdir(parents=True, exist_ok=True)
        stem = f"{k:07d}"  # our name, never the image's: nothing it holds can leave ``out``
        suffix = source.suffix.lower() if source.suffix.lower() in LINK_SUFFIXES else ".jpg"
        os.symlink(source.resolve(), out / "images" / part / f"{stem}{suffix}")
        (out / "labels" / part / f"{stem}.txt").write_text("\n".join(per_image[image_id]) + ("\n" if per_image[image_id] else ""))
    data = out / "data.yaml"
    # JSON strings are YAML strings: a name holding a colon, a quote or a newline stays one name
    data.write_text(f"path: {json.dumps(str(out.resolve()))}\ntrain: images/train\nval: images/val\n"
                    + "names:\n" + "".join(f"  {k}: {json.dumps(n)}\n" for k, n in enumerate(names)))
    return data


def train_yolo(data: Path, out: Path, config: YoloTrainConfig) -> Path:
    """Train with ultralytics; returns the path of the best weights (copied to ``out/best.pt``)."""
    from specialists.yolo import configure_ultralytics, run_on, threads_kept

    configure_ultralytics()
    provide_font()
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)  # its per-epoch tables would bury fld's own progress

    out = out.resolve()  # ultralytics puts a relative project under its own runs folder
    run = out / "run"
    last = run / "weights" / "last.pt"
    done = epochs_done(last) if last.exists() else 0
    if done is None or done >= config.epochs:  # stopped after its last epoch: nothing left to train
        log.info("YOLO training in %s finished already", run)
        return _final(run, out)
    resume = done > 0
    if resume:
        log.info("resuming YOLO training from %s after epoch %d of %d", last, done, config.epochs)
    with threads_kept() as threads:
        model = YOLO(str(last) if resume else config.model)
        run_on(model, threads, "on_train_epoch_start")
        model.train(data=str(data), epochs=config.epochs, imgsz=config.imgsz, batch=config.batch, device=config.device,
                    workers=0, plots=False, amp=False, project=str(out), name="run", exist_ok=True, verbose=False,
                    seed=config.seed, deterministic=True, lr0=config.lr0, mosaic=config.mosaic, resume=resume,
                    optimizer=config.optimizer, warmup_epochs=config.warmup_epochs,
                    patience=max(config.epochs, 50))
    return _final(run, out)


def epochs_done(last: Path) -> int | None:
    """Epochs a run's ``last.pt`` holds; None once ultralytics finished the run (it strips the
    optimizer and marks the epoch -1)."""
    import torch

    epoch = torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1)
    return None if epoch == -1 else epoch + 1


def _final(run: Path, out: Path) -> Path:
    best = run / "weights" / "best.pt"
    if not best.exists():
        best = run / "weights" / "last.pt"
    final = out / "best.pt"
    shutil.copyfile(best, final)
    return final


@dataclass(frozen=True)
class YoloBudget:
    epochs: int = 30
    imgsz: int = 320

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"YOLO budget: epochs >= 1 and imgsz a multiple of 32, got {self.epochs} / {self.imgsz}")


class YoloTrainer(Trainer):
    """ultralytics YOLO from ``yolov8n.yaml`` (or the previous round's weights) on object regions.
    Its confidence threshold is calibrated on the training set's own val split (never gold) and
    travels with it into the round's region filter."""

    name = "yolo"
    tasks = (Task("<OD>", "region-text/detection_f1"),)
    Budget = YoloBudget

    def _config(self, budget: YoloBudget, previous: dict | None, device: str) -> YoloTrainConfig:
        # a detector fine-tuned at another input size than it learnt at loses what it learnt
        imgsz = previous.get("imgsz", budget.imgsz) if previous else budget.imgsz
        return YoloTrainConfig(model=previous["weights"] if previous else "yolov8n.yaml", epochs=budget.epochs,
                               imgsz=imgsz, device=device, lr0=0.003 if previous is None else 0.001)

    @staticmethod
    def _objects(data: TrainingSet) -> pa.Table:
        return object_regions(data.tables["regions"])

    def _names(self, data: TrainingSet, previous: dict | None) -> list[str]:
        """The class list: kept from the previous model, so a retrained detector keeps its ids."""
        return previous["names"] if previous else sorted(set(self._objects(data).column("label").drop_null().to_pylist()))

    def _images(self, data: TrainingSet) -> TrainingSet:
        """Images that teach: every exhaustive image, and the others only where they hold objects
        (a pool image whose round kept no object is not a background)."""
        if data.exhaustive is None:
            return data
        has_objects = set(self._objects(data).column("image_id").to_pylist())
        return data.only([i for i in data.uris if i in data.exhaustive or i in has_objects])

    def settings(self, data: TrainingSet, budget: YoloBudget, previous: dict | None, device: str) -> dict:
        config = self._config(budget, previous, device)
        return {**config.to_dict(), "model": "previous" if previous else config.model, "names": self._names(data, previous),
                "images": self._images(data).ids()}

    def train(self, data: TrainingSet, folder: Path, budget: YoloBudget, previous: dict | None, device: str) -> dict:
        names = self._names(data, previous)
        if not names:
            raise ValueError("no object regions to train the detector on")
        data = self._images(data)
        objects = self._objects(data)
        config = self._config(budget, previous, device)
        dataset = write_yolo_dataset(objects, data.uris, data.sizes, names, folder / "dataset", config.val_fraction)
        weights = train_yolo(dataset, folder, config)
        # the threshold is chosen on the training set's val split, never gold; the round's filter
        # keeps this detector's boxes from it, and the gold measurement runs at it
        from specialists.yolo import YoloConfig, YoloDetector

        _, val_ids = split_ids(list(data.uris), config.val_fraction)
        detector = YoloDetector(YoloConfig(weights=str(weights), imgsz=config.imgsz, device=device, conf=0.01))
        conf, val_f1 = calibrate_confidence(detect(detector, data, val_ids), objects, val_ids)
        return {"weights": str(weights), "names": names, "imgsz": config.imgsz, "conf": conf, "val_f1": val_f1,
                "config": config.to_dict(), "train_images": len(data), "train_objects": objects.num_rows}

    def serve(self, manifest: dict, tasks: Sequence[str], device: str) -> list[Serving]:
        conf = manifest.get("conf", 0.25)
        return [Serving("yolo", {"weights": manifest["weights"], "imgsz": manifest["imgsz"], "conf": conf, "device": device},
                        min_score=conf, labels=tuple(manifest.get("names", ())))]
