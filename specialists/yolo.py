"""YoloDetector: any ultralytics YOLO detection weights (yolov8 / yolo11, COCO or custom).

Weights: a local ``.pt`` file; a model ``.yaml`` (random initialisation, for benchmarks and for
training from scratch); or, when online, a name ultralytics downloads itself (``yolo11x.pt``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from specialists.base import Batch, Resources, Specialist, WeightsError, weights_version
from specialists.columns import region_table

log = logging.getLogger(__name__)

HOW_TO_GET = ("Pass a .pt file saved by ultralytics (e.g. yolov8n.pt or your own best.pt), or a model "
              ".yaml such as yolov8n.yaml to start from random weights; named weights download only "
              "when YOLO_OFFLINE is unset and the network is reachable.")


def configure_ultralytics() -> None:
    """Keep ultralytics offline and its folders inside YOLO_CONFIG_DIR (no hub sync, no loggers)."""
    import torch  # before ultralytics, whose import sets OMP_NUM_THREADS=1 when unset: torch would take it

    torch.get_num_threads()
    from ultralytics import settings

    base = Path(os.environ.get("YOLO_CONFIG_DIR", Path.home() / ".fld" / "ultralytics"))
    wanted = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
              "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
              "openvino_msg": False, "datasets_dir": str(base / "datasets"),
              "weights_dir": str(base / "weights"), "runs_dir": str(base / "runs")}
    wanted = {k: v for k, v in wanted.items() if k in settings}
    if any(settings.get(k) != v for k, v in wanted.items()):
        settings.update(wanted)


@contextmanager
def threads_kept() -> Iterator[int]:
    """The process's torch thread count (yielded), put back after an ultralytics call: picking a
    device, ultralytics sets it for the whole process to its own NUM_THREADS (the cores less one,
    at most 8), which left every later model of ``fld run``'s process (Florence-2's training and
    gold measurement) on one of two cores, and would oversubscribe a Ray worker given fewer."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def run_on(model, threads: int, event: str) -> None:
    """Have ultralytics' ``model`` compute on ``threads`` from ``event`` on (a callback that runs
    after it has picked its device and thread count): it loads data in the same thread (workers=0),
    so the core it leaves free would stay idle (one epoch of fine-tuning on 2 cores: 44.6 s on
    ultralytics' one thread, 29.4 s on two)."""
    import torch

    model.add_callback(event, lambda _: torch.set_num_threads(threads))


@dataclass(frozen=True)
class YoloConfig:
    weights: str = "yolov8n.yaml"
    imgsz: int = 640
    conf: float = 0.05
    """Low on purpose: the confidence filter decides what is kept, and dropped rows stay visible."""
    iou: float = 0.7
    max_det: int = 300
    device: str = "cpu"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0 or not 0.0 < self.iou <= 1.0:
            raise ValueError(f"conf must be within [0, 1] and iou within (0, 1], got {self.conf}, {self.iou}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of 32 and >= 32, got {self.imgsz}")
        if self.max_det < 1 or self.batch_size < 1:
            raise ValueError("max_det and batch_size must be >= 1")


class YoloDetector(Specialist):
    name = "yolo"
    role = "detector"
    produces = ("regions",)

    def __init__(self, config: YoloConfig = YoloConfig()):
        gpus = 1.0 if config.device.startswith("cuda") else 0.0
        super().__init__(config.batch_size, Resources(cpus=1.0, gpus=gpus))
        self.config = config
        self.model = None

    def load(self) -> None:
        with threads_kept() as threads:
            self._load()
        run_on(self.model, threads, "on_predict_start")

    def _load(self) -> None:
        configure_ultralytics()
        from ultralytics import YOLO

        weights = self.config.weights
        path = Path(weights).expanduser()
        if path.suffix in (".yaml", ".yml"):
            self.model = YOLO(weights)  # ultralytics resolves its own model configs by name
            self._version = f"random-init:{path.name}"
        elif path.exists():
            try:
                self.model = YOLO(str(path))
            except Exception as err:  # ultralytics raises many kinds for a bad file
                raise WeightsError(f"cannot load YOLO weights from {path}: {type(err).__name__}: {err}. {HOW_TO_GET}") from None
            if getattr(self.model, "task", None) != "detect":
                raise WeightsError(f"{path} holds a YOLO {self.model.task!r} model, not a detector. {HOW_TO_GET}")
            self._version = weights_version(path)
        elif os.environ.get("YOLO_OFFLINE") == "1" or os.sep in weights:
            raise WeightsError(f"YOLO weights not found at {path}. {HOW_TO_GET}")
        else:
            self.model = YOLO(weights)
            self._version = weights_version(Path(self.model.ckpt_path))
        self.names = dict(self.model.names)
        log.info("YOLO %s: %d classes, version %s", weights, len(self.names), self._version)

    @property
    def floors(self) -> dict[str, float]:
        """ultralytics applies these inside the model: boxes under ``conf``, those its NMS merges
        at ``iou``, and those beyond ``max_det`` are never returned (uncountable from outside;
        images that reach ``max_det`` are counted). The round's calibrated floor is a filter."""
        return {"conf": self.config.conf, "nms_iou": self.config.iou, "max_det": self.config.max_det}

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        bgr = [image[:, :, ::-1] for image in batch.images]
        results = self.model.predict(bgr, imgsz=self.config.imgsz, conf=self.config.conf, iou=self.config.iou,
                                     max_det=self.config.max_det, device=self.config.device, verbose=False)
        ids, boxes, scores, labels = [], [], [], []
        for image_id, result in zip(batch.image_ids, results):
            found = result.boxes
            n = len(found)
            self.floor("max_det_reached (boxes beyond it were cut)", int(n >= self.config.max_det))
            ids += [image_id] * n
            boxes.append(found.xyxy.cpu().numpy().reshape(-1, 4))
            scores.append(found.conf.cpu().numpy())
            labels += [self.names[int(c)] for c in found.cls.cpu().numpy()]
        table = region_table(ids, np.concatenate(boxes) if boxes else np.zeros((0, 4)), labels,
                             np.concatenate(scores) if scores else np.zeros(0), kind="object",
                             specialist=self.name, version=self.version, round_id=batch.round, id_prefix="yolo")
        return {"regions": table}
