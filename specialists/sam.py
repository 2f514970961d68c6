"""SamSegmenter (segment-anything) and GrabCutSegmenter (OpenCV): masks for the boxes other
specialists proposed. SAM encodes a batch of images in one forward pass, then decodes every box
of an image in one call (its mask decoder takes one image embedding per call); its predicted
IoU is kept as the mask's score. GrabCut needs no weights and has no score."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from schemas.geometry import box_array
from schemas.masks import encode_rle
from specialists.base import MASKS, Batch, Resources, Specialist, WeightsError, require_path, weights_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamArchitecture:
    image_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    global_attn: tuple[int, ...] = (2, 5, 8, 11)
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    window_size: int = 14


ARCHITECTURES = {
    "vit_h": SamArchitecture(embed_dim=1280, depth=32, heads=16, global_attn=(7, 15, 23, 31)),
    "vit_l": SamArchitecture(embed_dim=1024, depth=24, heads=16, global_attn=(5, 11, 17, 23)),
    "vit_b": SamArchitecture(),
    "tiny": SamArchitecture(image_size=256, embed_dim=96, depth=2, heads=3, global_attn=(1,), prompt_dim=64,
                            decoder_mlp_dim=256, decoder_heads=4, window_size=8),
}
"""SAM's released sizes (as segment_anything builds them) and a tiny one trainable on a CPU."""


def build_sam(arch: SamArchitecture):
    """A SAM of ``arch`` with random weights (segment_anything's modules, any image size)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch.image_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.heads, patch_size=arch.patch_size,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=arch.global_attn, window_size=arch.window_size,
            out_chans=arch.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(embed_dim=arch.prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(arch.image_size, arch.image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=arch.prompt_dim, mlp_dim=arch.decoder_mlp_dim,
                                          num_heads=arch.decoder_heads),
            transformer_dim=arch.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=arch.prompt_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


HOW_TO_GET = ("Use a checkpoint released with segment-anything (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth, "
              "sam_vit_b_01ec64.pth) with the matching --model-type, or one saved by `fld bootstrap`.")


@dataclass(frozen=True)
class SamConfig:
    checkpoint: str | None = None
    """None: random weights (benchmarks only)."""
    model_type: str = "vit_b"
    architecture: SamArchitecture | None = None
    """Overrides ``model_type`` (a custom size, e.g. one trained by fld)."""
    device: str = "cpu"
    batch_size: int = 4
    kinds: tuple[str, ...] = ("object",)

    def __post_init__(self) -> None:
        if self.architecture is None and self.model_type not in ARCHITECTURES:
            raise ValueError(f"model_type must be one of {', '.join(ARCHITECTURES)}, got {self.model_type!r}")

    @property
    def arch(self) -> SamArchitecture:
        return self.architecture or ARCHITECTURES[self.model_type]


def load_sam(config: SamConfig):
    """The SAM of ``config`` with its checkpoint loaded; WeightsError says what is wrong."""
    sam = build_sam(config.arch)
    if config.checkpoint is None:
        return sam
    path = require_path(config.checkpoint, "SAM checkpoint", HOW_TO_GET)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise WeightsError(f"cannot read SAM checkpoint {path}: {type(err).__name__}: {err}. {HOW_TO_GET}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        sam.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[0]
        raise WeightsError(f"{path} does not fit a SAM {config.model_type if config.architecture is None else 'of the given architecture'}"
                           f" ({first}). {HOW_TO_GET}") from None
    return sam


def _prompt_rows(batch: Batch, kinds: tuple[str, ...]) -> pa.Table:
    regions = batch.prompts("regions")
    return regions.filter(pc.is_in(regions.column("kind"), pa.array(kinds, pa.string())))


def _with_masks(rows: pa.Table, masks: list[dict | None], scores: list[float | None], source: str) -> pa.Table:
    for name, values in (("mask", pa.array(masks, rows.schema.field("mask").type)),
                         ("mask_score", pa.array(scores, pa.float32())),
                         ("mask_specialist", pa.array([source if m is not None else None for m in masks], pa.string()))):
        rows = rows.set_column(rows.schema.get_field_index(name), name, values)
    return rows


class SamSegmenter(Specialist):
    name = "sam"
    role = "segmenter"
    produces = (MASKS,)
    needs = ("regions",)

    def __init__(self, config: SamConfig = SamConfig()):
        super().__init__(config.batch_size, Resources(cpus=1.0, gpus=1.0 if config.device.startswith("cuda") else 0.0))
        self.config = config
        self.model = None

    def load(self) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.model = load_sam(self.config).to(self.config.device)
        self.transform = ResizeLongestSide(self.config.arch.image_size)
        arch = asdict(self.config.arch)
        self._version = (weights_version(self.config.checkpoint) if self.config.checkpoint
                         else "random-init:" + "-".join(f"{k}{v}" for k, v in arch.items() if k in ("image_size", "embed_dim", "depth")))

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        rows = _prompt_rows(batch, self.config.kinds)
        if rows.num_rows == 0:
            return {MASKS: rows}
        device = self.config.device
        inputs, sizes = [], []
        for image in batch.images:
            resized = self.transform.apply_image(image)
            sizes.append(resized.shape[:2])
            tensor = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()
            inputs.append(self.model.preprocess(tensor[None].float())[0])
        embeddings = self.model.image_encoder(torch.stack(inputs))
        index = {image_id: k for k, image_id in enumerate(batch.image_ids)}
        images = rows.column("image_id").to_pylist()
        boxes = box_array(rows.column("box"))
        masks: list[dict | None] = [None] * rows.num_rows
        scores: list[float | None] = [None] * rows.num_rows
        for image_id, k in index.items():
            members = [i for i, img in enumerate(images) if img == image_id]
            if not members:
                continue
            original = batch.images[k].shape[:2]
            prompt = torch.as_tensor(self.transform.apply_boxes(boxes[members], original), device=device)
            sparse, dense = self.model.prompt_encoder(points=None, boxes=prompt, masks=None)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=embeddings[k : k + 1], image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            full = self.model.postprocess_masks(low_res, sizes[k], original) > self.model.mask_threshold
            for j, i in enumerate(members):
                masks[i] = encode_rle(full[j, 0].cpu().numpy())
                scores[i] = float(iou[j, 0].clamp(0, 1))
        return {MASKS: _with_masks(rows, masks, scores, f"{self.name}@{self.version}")}


@dataclass(frozen=True)
class GrabCutConfig:
    iterations: int = 3
    batch_size: int = 8
    kinds: tuple[str, ...] = field(default=("object",))
    margin: float = 0.5
    """Context around the box GrabCut sees, as a share of the box's longer side (at least 8 px)."""
    denoise: int = 9
    """Diameter in pixels of the edge-preserving (bilateral) filter run over the image before
    GrabCut, whose colour models sensor noise misleads (0: none). Its colour sigma is 75, OpenCV's
    customary value, and its space sigma the diameter. Given the truth's boxes on the noisy target
    domain's gold, the mean IoU per box (a box left without a mask counts 0) is 0.776 without it and
    0.821 with it, mostly as fewer boxes are left without a mask; 0.913 and 0.910 on clean images."""

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not 0.0 <= self.margin <= 10.0:
            raise ValueError(f"margin must be within 0..10, got {self.margin}")
        if not 0 <= self.denoise <= 31:
            raise ValueError(f"denoise must be a filter diameter within 0..31 pixels (0: none), got {self.denoise}")


class GrabCutSegmenter(Specialist):
    """Box-prompted GrabCut: a weight-free segmenter (near-perfect on clean synthetic shapes)."""

    name = "grabcut"
    role = "segmenter"
    produces = (MASKS,)
    needs = ("regions",)

    def __init__(self, config: GrabCutConfig = GrabCutConfig()):
        super().__init__(config.batch_size, Resources(cpus=1.0))
        self.config = config

    def load(self) -> None:
        self._version = (f"opencv-{cv2.__version__}-it{self.config.iterations}-m{self.config.margin}"
                         f"-bf{self.config.denoise}-seed0")

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        rows = _prompt_rows(batch, self.config.kinds)
        index = {image_id: k for k, image_id in enumerate(batch.image_ids)}
        ids = rows.column("image_id").to_pylist()
        images = {i: self._denoised(batch.images[index[i]]) for i in dict.fromkeys(ids)}  # once per image
        jobs = [(images[i], box) for i, box in zip(ids, rows.column("box").to_pylist())]
        workers = self.threads or torch.get_num_threads()  # the worker's share, else the process's
        if workers > 1 and len(jobs) > 1:  # cv2.grabCut releases the GIL: boxes in parallel threads
            with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
                masks = list(pool.map(lambda job: self._segment(*job), jobs))
        else:
            masks = [self._segment(image, box) for image, box in jobs]
        return {MASKS: _with_masks(rows, masks, [None] * len(masks), f"{self.name}@{self.version}")}

    def _denoised(self, image: np.ndarray) -> np.ndarray:
        d = self.config.denoise
        return cv2.bilateralFilter(np.ascontiguousarray(image), d, 75.0, float(d)) if d else image

    def _segment(self, image: np.ndarray, box: list[float]) -> dict | None:
        """One box's mask (RLE), or None for a box too small or one GrabCut cannot model."""
        h, w = image.shape[:2]
        x1, y1 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
        x2, y2 = int(np.clip(np.ceil(box[2]), x1 + 1, w)), int(np.clip(np.ceil(box[3]), y1 + 1, h))
        if x2 - x1 < 3 or y2 - y1 < 3:
            return None
        # GrabCut models the background from the pixels around the box: a window of the box
        # plus a margin gives it that context at a fraction of the whole image's cost.
        pad = max(8, int(self.config.margin * max(x2 - x1, y2 - y1)))
        cx1, cy1, cx2, cy2 = max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, w), min(y2 + pad, h)
        crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2, ::-1])
        mask = np.zeros(crop.shape[:2], np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # its k-means starts from this thread's OpenCV RNG: seeded, a mask depends on its box alone
        try:
            cv2.grabCut(crop, mask, (x1 - cx1, y1 - cy1, x2 - x1, y2 - y1), bgd, fgd,
                        self.config.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error:  # e.g. a box over the whole image leaves no background to model
            return None
        found = np.zeros((h, w), bool)
        found[cy1:cy2, cx1:cx2] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        return encode_rle(found) if found.any() else None
