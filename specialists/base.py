"""The specialist contract: a cheap constructor, ``load()`` for weights, ``__call__(batch)`` that
turns a batch of images (and what earlier specialists proposed for them) into annotation rows,
declared resources and batch size, a name and a version (a hash of the weights it loaded).
Specialists are plain Python: the engine decides where and how many of each run.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import schema_for


class WeightsError(ValueError):
    """Weights that cannot be loaded: the message names the path and how to get usable weights."""


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus <= 0 or self.gpus < 0:
            raise ValueError(f"resources need cpus > 0 and gpus >= 0, got {self.cpus} / {self.gpus}")


@dataclass
class Batch:
    """Images (upright RGB, uint8) and, for dependent specialists, earlier proposals on them."""

    image_ids: list[str]
    images: list[np.ndarray]
    regions: pa.Table | None = None
    texts: pa.Table | None = None
    round: int = 0
    sizes: dict[str, tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.image_ids) != len(self.images):
            raise ValueError(f"{len(self.image_ids)} image ids for {len(self.images)} images")
        self.images = [as_rgb(image, name) for image, name in zip(self.images, self.image_ids)]
        self.sizes = {i: (int(a.shape[1]), int(a.shape[0])) for i, a in zip(self.image_ids, self.images)}

    def __len__(self) -> int:
        return len(self.images)

    def prompts(self, table: str) -> pa.Table:
        """Earlier proposals (``regions`` or ``texts``) on this batch's images only."""
        value = self.regions if table == "regions" else self.texts
        if value is None:
            return schema_for(table).empty_table()
        return value.filter(pc.is_in(value.column("image_id"), pa.array(self.image_ids, pa.string())))


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An HxWx3 uint8 array: grayscale (HxW or HxWx1) is repeated, an alpha channel dropped."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: pixels must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"{name}: expected height x width x 3 pixels, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


_VERSIONS: dict[tuple, str] = {}


def weights_version(path: str | Path) -> str:
    """BLAKE2b of a weights file, or of every file of a checkpoint folder (cached per mtime)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _VERSIONS:
        digest = hashlib.blake2b(digest_size=8)
        for p in files:
            digest.update(p.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            with open(p, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _VERSIONS[key] = digest.hexdigest()
    return _VERSIONS[key]


def require_path(path: str | Path, what: str, how: str) -> Path:
    """``path`` if it exists, else WeightsError naming it and how to obtain ``what``."""
    resolved = Path(os.path.expanduser(str(path)))
    if not resolved.exists():
        raise WeightsError(f"{what} not found at {resolved}. {how}")
    return resolved


MASKS = "masks"
"""What a segmenter produces: rows of the ``regions`` schema that carry masks for regions an
earlier specialist proposed (matched by region id), not new regions."""


class Specialist(ABC):
    """One model role. Subclasses set ``name`` and ``role``; ``produces`` and ``needs`` say what a
    configured instance makes and takes (a class default, or set in ``__init__`` from the config,
    as Florence-2 does from its tasks), so the engine can order any valid round."""

    name: ClassVar[str]
    role: ClassVar[str]
    produces: tuple[str, ...] = ()
    """Tables it returns: ``texts``, ``regions``, ``triplets``, or ``masks`` (see MASKS)."""
    needs: tuple[str, ...] = ()
    """Tables of earlier specialists this one takes as prompts (``regions``, ``texts``)."""

    def __init__(self, batch_size: int = 8, resources: Resources = Resources()):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.resources = resources
        self._version: str | None = None
        self.threads: int | None = None
        """CPU threads the worker gives this model (set by the engine before ``load``; None: the
        library's default). torch reads the process-wide setting; a specialist whose runtime takes
        its own (onnxruntime) reads this."""
        self.floored: Counter[str] = Counter()
        """What the model's own floors removed since ``take_floored``, by reason (see ``floors``)."""

    @property
    def floors(self) -> dict[str, float]:
        """The model's own cut-offs, applied before the round's filters see anything (a confidence
        floor, an NMS inside the model, a cap on detections): recorded with every round."""
        return {}

    def floor(self, reason: str, n: int = 1) -> None:
        """Count ``n`` outputs that a floor of the model removed (they never become rows)."""
        if n:
            self.floored[reason] += n

    def take_floored(self) -> dict[str, int]:
        """The floor counts since the last call, and a fresh count."""
        counts, self.floored = dict(self.floored), Counter()
        return counts

    @property
    def loaded(self) -> bool:
        return self._version is not None

    @property
    def version(self) -> str:
        if self._version is None:
            raise RuntimeError(f"{self.name}: call load() before using the specialist")
        return self._version

    @abstractmethod
    def load(self) -> None:
        """Load weights (once per worker); sets the version."""

    @abstractmethod
    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        """Annotation rows for a non-empty batch."""

    def __call__(self, batch: Batch) -> dict[str, pa.Table]:
        if not self.loaded:
            self.load()
        if len(batch) == 0:
            return {t: schema_for("regions" if t == MASKS else t).empty_table() for t in self.produces}
        return self.predict(batch)

    def provenance(self, round_id: int, score: float | None, source: str = "model_probability") -> dict:
        return {"round": round_id, "specialist": self.name, "specialist_version": self.version,
                "score": score, "score_source": source if score is not None else "none"}

    def table(self, name: str, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=schema_for(name))
