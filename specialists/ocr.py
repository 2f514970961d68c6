"""RapidOcrReader: PP-OCR detection and recognition through rapidocr-onnxruntime, whose ONNX
models ship inside the package (no download). rapidocr reads one image per call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from specialists.base import Batch, Resources, Specialist, weights_version
from specialists.columns import region_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RapidOcrConfig:
    min_score: float = 0.3
    """rapidocr's own text-score floor (box text below it is not returned)."""
    batch_size: int = 8
    threads: int = 0
    """onnxruntime threads per session (0: the worker's share of the cores when the engine sets
    one, else onnxruntime's default of one per core)."""
    det_limit_side_len: int = 960
    det_limit_type: str = "max"
    """The text detector's input size: ``max``: the long side scaled down to at most this, never
    up (PaddleOCR's classic setting); ``min``: the short side scaled up to at least this
    (rapidocr's own default, 736, which enlarges a 320 x 240 image three times: ten times the
    time, and noise read as text; ``bench/ocr_settings.py``)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {self.min_score}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.det_limit_side_len < 32:
            raise ValueError(f"det_limit_side_len must be >= 32, got {self.det_limit_side_len}")
        if self.det_limit_type not in ("max", "min"):
            raise ValueError(f"det_limit_type must be 'max' or 'min', got {self.det_limit_type!r}")


class RapidOcrReader(Specialist):
    name = "rapidocr"
    role = "ocr"
    produces = ("regions",)

    def __init__(self, config: RapidOcrConfig = RapidOcrConfig()):
        super().__init__(config.batch_size, Resources(cpus=1.0))
        self.config = config
        self.engine = None

    def load(self) -> None:
        import rapidocr_onnxruntime
        from rapidocr_onnxruntime import RapidOCR

        count = self.config.threads or self.threads  # the config's own, else the worker's share
        threads = {"intra_op_num_threads": count, "inter_op_num_threads": 1} if count else {}
        self.engine = RapidOCR(text_score=0.0, det_limit_side_len=self.config.det_limit_side_len,
                               det_limit_type=self.config.det_limit_type, **threads)  # min_score: in predict
        models = Path(rapidocr_onnxruntime.__file__).parent / "models"
        self._version = weights_version(models) if models.exists() else f"rapidocr-{rapidocr_onnxruntime.__version__}"

    @property
    def floors(self) -> dict[str, float]:
        """Text read with a score under ``min_score`` is dropped here (counted), as is empty text."""
        return {"min_score": self.config.min_score}

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        ids, boxes, quads, texts, scores = [], [], [], [], []
        for image_id, image in zip(batch.image_ids, batch.images):
            found, _ = self.engine(image[:, :, ::-1])  # rapidocr takes OpenCV's BGR
            for quad, text, score in found or []:
                if float(score) < self.config.min_score:
                    self.floor("text_score below min_score")
                    continue
                q = np.asarray(quad, np.float32).reshape(4, 2)
                h, w = image.shape[:2]
                q[:, 0], q[:, 1] = q[:, 0].clip(0, w), q[:, 1].clip(0, h)
                box = [q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()]
                if box[2] <= box[0] or box[3] <= box[1] or not str(text).strip():
                    self.floor("empty text or a box with no area")
                    continue
                ids.append(image_id)
                boxes.append(box)
                quads.append(q.reshape(-1).tolist())
                texts.append(str(text))
                scores.append(float(score))
        quad_type = pa.list_(pa.float32(), 8)
        table = region_table(ids, np.array(boxes, np.float32).reshape(-1, 4), texts, np.array(scores, np.float32),
                             kind="ocr", specialist=self.name, version=self.version, round_id=batch.round,
                             id_prefix="ocr", extra={"quad": pa.array(quads, quad_type)})
        return {"regions": table}
