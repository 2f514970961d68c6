"""Training a box-prompted SAM (a small one from nothing, or fine-tuning a checkpoint) on regions
that carry masks, the way SA-1B's model was retrained on each stage's masks.

Each step encodes a batch of images once, decodes all of each image's box prompts in one call
(SAM's mask decoder takes one image embedding per call), and minimises focal-free BCE + Dice on
the low-resolution masks plus the IoU head's squared error against the true IoU, as SAM did.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from torch.nn import functional as F

from schemas.geometry import box_array
from schemas.masks import decode_rle
from specialists.sam import GrabCutConfig
from specialists.training.trainer import Serving, Task, Trainer, TrainingSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamTrainConfig:
    steps: int = 300
    images_per_step: int = 8
    boxes_per_image: int = 8
    lr: float = 1e-3
    box_jitter: float = 0.05
    """Prompt boxes are jittered by up to this share of their side, as detector boxes are imprecise."""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.steps, self.images_per_step, self.boxes_per_image) < 1 or self.lr <= 0:
            raise ValueError("steps, images_per_step, boxes_per_image must be >= 1 and lr > 0")
        if not 0.0 <= self.box_jitter < 0.5:
            raise ValueError(f"box_jitter must be within [0, 0.5), got {self.box_jitter}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SamSample:
    image: np.ndarray
    boxes: np.ndarray
    """(n, 4) pixel boxes."""
    masks: list[dict]
    """RLE masks, one per box."""


def _prepare(sam, samples: list[SamSample]):
    """Per sample: the preprocessed image tensor, and its boxes and masks at the model's resolution."""
    from segment_anything.utils.transforms import ResizeLongestSide

    size = sam.image_encoder.img_size
    transform = ResizeLongestSide(size)
    prepared = []
    for s in samples:
        resized = transform.apply_image(s.image)
        tensor = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())[0]
        h, w = resized.shape[:2]
        masks = np.stack([decode_rle(m) for m in s.masks]).astype(np.float32)
        target = F.interpolate(torch.from_numpy(masks)[:, None], size=(h, w), mode="bilinear", align_corners=False)
        target = F.pad(target, (0, size - w, 0, size - h))
        low = F.interpolate(target, size=(size // 4, size // 4), mode="bilinear", align_corners=False)[:, 0] > 0.5
        prepared.append((tensor, transform.apply_boxes(s.boxes, s.image.shape[:2]), low))
    return prepared


def train_sam(sam, samples: list[SamSample], out: str | Path, config: SamTrainConfig) -> dict:
    """Train ``sam`` in place; saves ``out/sam.pth`` and returns training statistics."""
    samples = [s for s in samples if len(s.boxes)]
    if not samples:
        raise ValueError("no regions with masks to train SAM on")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    data = _prepare(sam, samples)
    sam.to(config.device).train()
    optimizer = torch.optim.AdamW([p for p in sam.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.01)
    started, losses = time.monotonic(), []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / config.steps))
        picks = [data[rng.randrange(len(data))] for _ in range(config.images_per_step)]
        embeddings = sam.image_encoder(torch.stack([p[0] for p in picks]).to(config.device))
        loss = torch.zeros((), device=config.device)
        for k, (_, boxes, low) in enumerate(picks):
            chosen = rng.sample(range(len(boxes)), min(len(boxes), config.boxes_per_image))
            box = torch.as_tensor(boxes[chosen], dtype=torch.float32)
            side = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]] * 2, dim=1)
            box = box + (torch.rand_like(box) * 2 - 1) * config.box_jitter * side
            sparse, dense = sam.prompt_encoder(points=None, boxes=box.to(config.device), masks=None)
            logits, iou = sam.mask_decoder(image_embeddings=embeddings[k:k + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=False)
            target = low[chosen].float().to(config.device)
            logits = logits[:, 0]
            prob = logits.sigmoid()
            dice = 1 - (2 * (prob * target).flatten(1).sum(1) + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
            with torch.no_grad():
                hard = logits > 0
                true_iou = (hard & (target > 0)).flatten(1).sum(1) / ((hard | (target > 0)).flatten(1).sum(1).clamp(min=1))
            loss = loss + F.binary_cross_entropy_with_logits(logits, target) + dice.mean() + F.mse_loss(iou[:, 0], true_iou.float())
        loss = loss / len(picks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    sam.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".sam.pth.{os.getpid()}.tmp"
    torch.save(sam.state_dict(), tmp)
    os.replace(tmp, out / "sam.pth")
    seconds = time.monotonic() - started
    return {"steps": config.steps, "seconds": seconds, "final_loss": float(np.mean(losses[-20:])),
            "images_per_second": config.steps * config.images_per_step / seconds}


SAM_ARCH = "tiny"
SEGMENT = "<SEG>"
MASK_IOU = "region-text/mask_iou"


@dataclass(frozen=True)
class SamBudget:
    steps: int = 300
    arch: str = SAM_ARCH
    """The architecture trained from nothing (``specialists.sam.ARCHITECTURES``)."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"SAM budget: steps must be >= 1, got {self.steps}")


class SamTrainer(Trainer):
    """A box-prompted SAM on the object regions that carry masks (from nothing, or from the
    previous round's weights), measured given the gold boxes."""

    name = "sam"
    tasks = (Task(SEGMENT, MASK_IOU, exclusive=True),)
    Budget = SamBudget
    prompted_tasks = frozenset({SEGMENT})

    @staticmethod
    def _config(budget: SamBudget, previous: dict | None, device: str) -> SamTrainConfig:
        return SamTrainConfig(steps=budget.steps, device=device, lr=1e-3 if previous is None else 3e-4)

    def settings(self, data: TrainingSet, budget: SamBudget, previous: dict | None, device: str) -> dict:
        return {**self._config(budget, previous, device).to_dict(), "arch": previous["model_type"] if previous else budget.arch}

    def train(self, data: TrainingSet, folder: Path, budget: SamBudget, previous: dict | None, device: str) -> dict:
        from specialists.sam import SamConfig, load_sam

        regions = data.tables["regions"]
        masked = regions.filter(pc.and_(pc.equal(regions.column("kind"), "object"), pc.is_valid(regions.column("mask"))))
        if masked.num_rows == 0:
            raise ValueError("no object regions with masks to train the segmenter on")
        by_image: dict[str, list[int]] = {}
        for k, image_id in enumerate(masked.column("image_id").to_pylist()):
            by_image.setdefault(image_id, []).append(k)
        boxes, masks = box_array(masked.column("box")), masked.column("mask").to_pylist()
        samples = [SamSample(data.pixels(i), boxes[rows], [masks[k] for k in rows]) for i, rows in by_image.items()]
        arch = previous["model_type"] if previous else budget.arch
        config = self._config(budget, previous, device)
        sam = load_sam(SamConfig(checkpoint=previous["weights"] if previous else None, model_type=arch))
        stats = train_sam(sam, samples, folder, config)
        return {"weights": str(folder / "sam.pth"), "model_type": arch, "config": config.to_dict(),
                "train_masks": masked.num_rows, **stats}

    def serve(self, manifest: dict, tasks: Sequence[str], device: str) -> list[Serving]:
        return [Serving("sam", {"checkpoint": manifest["weights"], "model_type": manifest["model_type"], "device": device})]


@dataclass(frozen=True)
class GrabCutBudget:
    iterations: int = 3
    denoise: int = GrabCutConfig.denoise
    """``GrabCutConfig.denoise``: the bilateral filter's diameter (0: none)."""

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"GrabCut: iterations must be >= 1, got {self.iterations}")
        if not 0 <= self.denoise <= 31:
            raise ValueError(f"GrabCut: denoise must be a filter diameter within 0..31 pixels (0: none), got {self.denoise}")


class GrabCutTrainer(Trainer):
    """GrabCut learns nothing: it is measured on gold like the trained segmenter, so that the
    segmenter gate can choose between them."""

    name = "grabcut"
    tasks = (Task(SEGMENT, MASK_IOU, exclusive=True),)
    Budget = GrabCutBudget
    trains = False
    prompted_tasks = frozenset({SEGMENT})

    def settings(self, data: TrainingSet, budget: GrabCutBudget, previous: dict | None, device: str) -> dict:
        return {"iterations": budget.iterations, "denoise": budget.denoise}

    def train(self, data: TrainingSet, folder: Path, budget: GrabCutBudget, previous: dict | None, device: str) -> dict:
        return {"weights": "", "iterations": budget.iterations, "denoise": budget.denoise}

    def serve(self, manifest: dict, tasks: Sequence[str], device: str) -> list[Serving]:
        # served as it was measured: a manifest from before the filter had none
        return [Serving("grabcut", {"iterations": manifest["iterations"], "denoise": manifest.get("denoise", 0)})]
