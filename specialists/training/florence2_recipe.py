"""What makes a small Florence-2 learn to see on a CPU (docs/FLORENCE2_RECIPE.md has the measurements).

Two pieces, both used only while training (the saved checkpoint is a plain Florence-2):

* **Structured location embeddings.** ``<loc_k>`` rows of the shared (tied) embedding start as
  sinusoidal codes of ``k``, so neighbouring bins start close both as inputs and as output
  classes: a near miss is a small error from the first step, instead of 1000 unrelated classes
  learnt one by one.
* **A dense auxiliary head** on the projected visual tokens: each token predicts the category of
  the region whose box covers its cell (or background) and that box. The vision tower gets a
  direct, dense gradient from the first step instead of only what trickles back through the
  decoder's cross-attention.
* **Mirrored ``<OD>`` examples** (``flip_od``): each image's ``<OD>`` example also as its left-right
  mirror image with the mirrored boxes (bin ``k`` becomes ``999 - k``, regions again in raster
  order), so the boxes of a few hundred seed images are not learnt by heart. Only ``<OD>``: a
  mirrored image would make its OCR text and any "left of" in a description wrong.
* **Cropped ``<OD>`` examples** (``crop_od``): each image's ``<OD>`` example also on a few seeded
  random crops (60-100% of each side, the image's aspect), with the boxes whose centre the crop
  holds, clipped to it (torchvision's ``RandomIoUCrop`` keeps boxes by the same rule). Objects
  move across the visual grid and change scale, so a box list cannot be learnt by heart.
* **Region descriptions on crops** (``crop_regions``): each ``<REGION_TO_DESCRIPTION>`` example
  on a square crop around its box (the box plus a margin, the box's tokens in the crop) instead of
  the whole image, as FLD-5B's region captions are made and as ``Florence2Specialist`` then serves
  the model (its ``region_margin``): at 224 px a whole image shrinks an object to a cell or two of
  the visual grid, its crop fills the grid.
* **OCR on object crops** (``crop_ocr``): ``<OCR_WITH_REGION>`` also on the same square crops of the
  image's object boxes (from its ``<OD>`` example), with the text regions the crop holds whole, in
  the crop's bins: every crop that holds text, and as many seeded crops that hold none (whose
  target is empty), so the model learns to read where a word fills the grid and to say nothing
  where there is no word. ``Florence2Specialist`` reads the kept boxes' crops the same way.
* **Reading text lines** (``read_lines``): ``<OCR>`` (the plain text, no regions) on the tight crop
  of each text region (``line_crop``: the line's box and a margin of its height), fed at the
  processor's size, so a word of 4-6 letters spans the visual grid's width; each line also through
  ``ocr_views - 1`` seeded jittered windows, with ``corrupt_views`` each through a seeded photometric
  corruption (lighting, blur, sensor noise, JPEG: ``corrupted``), so that a line the model learnt to
  read on clean seed images stays readable through a worse camera. ``Florence2Specialist`` reads
  the round's text regions (RapidOCR's) the same way. On object crops the model never learnt which word a sign says; on
  line crops it did within 200 steps (docs/FLORENCE2_RECIPE.md, "Reading text lines").
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from schemas.geometry import square_window
from specialists.florence2 import OCR, READ, REGION_TO_DESCRIPTION, line_crop, region_crop
from specialists.florence2_parse import decode_bin, location_tokens, parse_florence2, quantize
from specialists.training.florence2_examples import Example

LOC_BINS = 1000
MIRRORED = "#mirrored"
"""Suffix of the image id of an image's mirrored copy (training only)."""
CROPPED = "#crop"
"""Suffix (with the crop's number) of the image id of an image's cropped copy (training only)."""
OCR_CROP = "#ocr"
"""Suffix (with the crop's number) of the image id of an object crop's OCR example (training only)."""
LINE_CROP = "#line"
"""Suffix (with the line's number) of the image id of a text line's crop (training only)."""
LINE_JITTER = 0.15
"""A jittered view of a line moves its window up to this share of the line's height each way."""
REGION_CROP = "#region"
"""Suffix (with the example's number) of the image id of a region description's crop (training only)."""
CROP_SIDE = (0.6, 1.0)
"""The range of a crop's side as a share of the image's."""
CORRUPTION = {"light": (0.6, 1.4), "saturation": (0.0, 1.5), "hue": (-0.5, 0.5), "blur": (0.0, 2.0),
              "noise": (0.0, 20.0), "jpeg_quality": (15, 95)}
"""Ranges of ``corrupted``'s strengths, each drawn uniformly: brightness and contrast factors,
saturation factor (0: grey), hue shift (a share of the colour wheel: any colour), blur sigma
(pixels), noise sigma (of 255) and JPEG quality; from none to about the world's ``harsh`` shift
(``engine.world.shift.SHIFTS``), colours the seed never shows included."""
_REGION = re.compile(r"(.*?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>", re.S)
_PROMPT_BOX = re.compile(re.escape(REGION_TO_DESCRIPTION) + r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>$")


def mirrored_od_target(target: str) -> str:
    """An ``<OD>`` target ("label<loc_x1><loc_y1><loc_x2><loc_y2>..."), mirrored left to right."""
    regions = [(label, LOC_BINS - 1 - int(x2), int(y1), LOC_BINS - 1 - int(x1), int(y2))
               for label, x1, y1, x2, y2 in _REGION.findall(target)]
    regions.sort(key=lambda r: (r[2], r[1]))
    return "".join(f"{label}<loc_{x1}><loc_{y1}><loc_{x2}><loc_{y2}>" for label, x1, y1, x2, y2 in regions)


def with_mirrored_od(examples: list, images: dict[str, np.ndarray]) -> tuple[list, dict[str, np.ndarray]]:
    """``examples`` plus each ``<OD>`` example on its mirrored image, and ``images`` plus those."""
    extra = [replace(e, image_id=e.image_id + MIRRORED, target=mirrored_od_target(e.target))
             for e in examples if e.task == "<OD>" and e.image_id in images]
    mirrored = {e.image_id: np.ascontiguousarray(images[e.image_id.removesuffix(MIRRORED)][:, ::-1]) for e in extra}
    return examples + extra, {**images, **mirrored}


def cropped_od_target(target: str, size: tuple[int, int], crop: tuple[int, int, int, int]) -> str:
    """An ``<OD>`` target of an image of ``size`` (w, h), for its ``crop`` (x1, y1, x2, y2 in
    pixels): the boxes whose centre the crop holds, clipped to it, in the crop's bins and in
    raster order. Bins are read at their centres and binned again, as serving reads and writes them."""
    w, h = size
    x1c, y1c, x2c, y2c = crop
    cw, ch = x2c - x1c, y2c - y1c
    regions = []
    for label, *bins in _REGION.findall(target):
        x1, y1, x2, y2 = (decode_bin(int(b), w if i % 2 == 0 else h) for i, b in enumerate(bins))
        if not (x1c <= (x1 + x2) / 2 < x2c and y1c <= (y1 + y2) / 2 < y2c):
            continue
        box = (max(x1, x1c) - x1c, max(y1, y1c) - y1c, min(x2, x2c) - x1c, min(y2, y2c) - y1c)
        regions.append((label, *(quantize(v, cw if i % 2 == 0 else ch) for i, v in enumerate(box))))
    regions.sort(key=lambda r: (r[2], r[1]))
    return "".join(f"{label}<loc_{x1}><loc_{y1}><loc_{x2}><loc_{y2}>" for label, x1, y1, x2, y2 in regions)


def with_cropped_od(examples: list, images: dict[str, np.ndarray], crops: int, seed: int = 0
                    ) -> tuple[list, dict[str, np.ndarray]]:
    """``examples`` plus each ``<OD>`` example on ``crops`` seeded random crops of its image (those
    that keep at least one box), and ``images`` plus those crops."""
    rng = np.random.default_rng(seed)
    extra, cropped = [], {}
    for e in examples:
        if e.task != "<OD>" or e.image_id not in images:
            continue
        image = images[e.image_id]
        h, w = image.shape[:2]
        for k in range(crops):
            side = rng.uniform(*CROP_SIDE)
            cw, ch = max(1, round(side * w)), max(1, round(side * h))
            x1, y1 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            target = cropped_od_target(e.target, (w, h), (x1, y1, x1 + cw, y1 + ch))
            if not target:
                continue
            image_id = f"{e.image_id}{CROPPED}{k}"
            extra.append(replace(e, image_id=image_id, target=target))
            cropped[image_id] = np.ascontiguousarray(image[y1:y1 + ch, x1:x1 + cw])
    return examples + extra, {**images, **cropped}


def with_cropped_regions(examples: list, images: dict[str, np.ndarray], margin: float) -> tuple[list, dict[str, np.ndarray]]:
    """``examples`` with each ``<REGION_TO_DESCRIPTION>`` example moved onto its crop (the box's
    ``square_window`` with ``margin``; its tokens re-binned in the crop: ``region_crop``, as served),
    and ``images`` plus those crops. The box is read from the prompt's bins at their centres."""
    out, cropped = [], {}
    for k, e in enumerate(examples):
        found = _PROMPT_BOX.match(e.prompt) if e.task == REGION_TO_DESCRIPTION and e.image_id in images else None
        if found is None:
            out.append(e)
            continue
        image = images[e.image_id]
        size = (image.shape[1], image.shape[0])
        box = [decode_bin(int(b), size[i % 2]) for i, b in enumerate(found.groups())]
        crop, prompt = region_crop(image, box, margin)
        image_id = f"{e.image_id}{REGION_CROP}{k}"
        cropped[image_id] = np.ascontiguousarray(crop)
        out.append(replace(e, image_id=image_id, prompt=prompt))
    return out, {**images, **cropped}


def ocr_crop_target(texts: list[tuple[str, list[float]]], window: tuple[int, int, int, int]) -> str | None:
    """The ``<OCR_WITH_REGION>`` target of a crop ``window`` (x1, y1, x2, y2) of an image whose text
    regions are ``texts`` (text, quad in pixels): those the window holds whole, in the window's bins
    and in raster order; None when the window cuts a text region (a part of a word is no reading)."""
    a, b, c, d = window
    kept = []
    for text, quad in texts:
        xs, ys = quad[0::2], quad[1::2]
        inside = [a - 1 <= x <= c + 1 for x in xs] + [b - 1 <= y <= d + 1 for y in ys]
        if all(inside):
            kept.append((text, [min(max(v - (a if i % 2 == 0 else b), 0.0), float(c - a if i % 2 == 0 else d - b))
                                for i, v in enumerate(quad)]))
        elif min(xs) < c and max(xs) > a and min(ys) < d and max(ys) > b:
            return None
    kept.sort(key=lambda t: (round(min(t[1][1::2])), round(min(t[1][0::2]))))
    return "".join(text + location_tokens(quad, (c - a, d - b)) for text, quad in kept)


def with_cropped_ocr(examples: list, images: dict[str, np.ndarray], margin: float, seed: int = 0, views: int = 1
                     ) -> tuple[list, dict[str, np.ndarray], set[str]]:
    """``examples`` plus ``<OCR_WITH_REGION>`` examples on the square crops (``square_window`` with
    ``margin``) of each image's ``<OD>`` boxes: every crop that holds a text region whole, and as many
    seeded crops that hold none; ``images`` plus those crops; and the crops' image ids. ``views`` > 1:
    each crop that holds text also seen ``views - 1`` more times through a seeded jittered window
    (margin 0.5x-2x, centre moved up to a tenth of the side), so a few hundred signs are not
    learnt by heart."""
    rng = np.random.default_rng(seed)
    ocr = {e.image_id: e for e in examples if e.task == OCR}
    with_text, without = [], []
    for k, e in enumerate(examples):
        if e.task != "<OD>" or e.image_id not in images:
            continue
        image = images[e.image_id]
        size = (image.shape[1], image.shape[0])
        texts = [(i.text, list(i.quad)) for i in parse_florence2(ocr[e.image_id].target, OCR, size)] if e.image_id in ocr else []
        for j, item in enumerate(parse_florence2(e.target, "<OD>", size)):
            box = list(item.box)
            window = square_window(box, size, margin)
            target = ocr_crop_target(texts, window)
            if target is None:
                continue
            if not target:
                without.append((f"{e.image_id}{OCR_CROP}{k}.{j}", e.image_id, window, target))
                continue
            with_text.append((f"{e.image_id}{OCR_CROP}{k}.{j}", e.image_id, window, target))
            side = max(box[2] - box[0], box[3] - box[1])
            for v in range(1, views):
                dx, dy = rng.uniform(-0.1, 0.1, 2) * side
                moved = [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]
                window = square_window(moved, size, margin * rng.uniform(0.5, 2.0))
                target = ocr_crop_target(texts, window)
                if target:
                    with_text.append((f"{e.image_id}{OCR_CROP}{k}.{j}.{v}", e.image_id, window, target))
    picked = [without[i] for i in sorted(rng.choice(len(without), min(len(with_text), len(without)), replace=False))]
    extra, cropped = [], {}
    for image_id, source, (a, b, c, d), target in with_text + picked:
        extra.append(Example(image_id, OCR, OCR, target))
        cropped[image_id] = np.ascontiguousarray(images[source][b:d, a:c])
    return examples + extra, {**images, **cropped}, set(cropped)


def corrupted(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` (H x W x 3, uint8) as a worse camera might take them, in colours it never showed:
    brightness and contrast each scaled within ``CORRUPTION["light"]``, saturation scaled and hue
    turned (torchvision's ``ColorJitter``), a Gaussian blur, Gaussian sensor noise and JPEG
    compression, each of a strength drawn from ``rng`` within ``CORRUPTION``: torchvision's ops,
    with every draw from ``rng`` so that a seed gives the same views."""
    low, high = CORRUPTION["light"]
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    image = F.adjust_contrast(F.adjust_brightness(image, float(rng.uniform(low, high))), float(rng.uniform(low, high)))
    image = F.adjust_hue(F.adjust_saturation(image, float(rng.uniform(*CORRUPTION["saturation"]))),
                         float(rng.uniform(*CORRUPTION["hue"])))
    sigma = float(rng.uniform(*CORRUPTION["blur"]))
    if sigma > 0.05:
        side = min(2 * math.ceil(3 * sigma) + 1, 2 * min(pixels.shape[:2]) - 1)  # reflect padding stays inside
        image = F.gaussian_blur(image, [side, side], [sigma, sigma])
    noise = rng.normal(0.0, rng.uniform(*CORRUPTION["noise"]), tuple(image.shape))  # torchvision's draws are unseeded
    image = (image.to(torch.float32) + torch.from_numpy(noise).to(torch.float32)).round().clamp(0, 255).to(torch.uint8)
    image = F.jpeg(image, int(rng.integers(CORRUPTION["jpeg_quality"][0], CORRUPTION["jpeg_quality"][1] + 1)))
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def with_read_lines(examples: list, images: dict[str, np.ndarray], margin: float, seed: int = 0, views: int = 1,
                    corrupt: bool = False) -> tuple[list, dict[str, np.ndarray], set[str]]:
    """``examples`` plus a ``<OCR>`` example on the tight crop (``line_crop`` with ``margin``) of each
    text region of each ``<OCR_WITH_REGION>`` example, its target the region's text; with ``views``
    > 1, each line also through ``views - 1`` seeded windows moved up to ``LINE_JITTER`` of its height
    and with 0.5x-1.5x the margin, each ``corrupted`` too with ``corrupt``; ``images`` plus those
    crops; and the crops' image ids."""
    rng, camera = np.random.default_rng(seed), np.random.default_rng([seed, 1])  # the same windows either way
    extra, cropped = [], {}
    for k, e in enumerate(examples):
        if e.task != OCR or e.image_id not in images:
            continue
        image = images[e.image_id]
        for j, item in enumerate(parse_florence2(e.target, OCR, (image.shape[1], image.shape[0]))):
            if not item.text.strip():
                continue
            x1, y1, x2, y2 = item.box
            height = max(y2 - y1, 1.0)
            for v in range(views):
                box, m = item.box, margin
                if v:
                    dx, dy = rng.uniform(-LINE_JITTER, LINE_JITTER, 2) * height
                    box, m = (x1 + dx, y1 + dy, x2 + dx, y2 + dy), margin * rng.uniform(0.5, 1.5)
                crop_id = f"{e.image_id}{LINE_CROP}{k}.{j}.{v}"
                crop = line_crop(image, box, m)
                cropped[crop_id] = corrupted(crop, camera) if v and corrupt else crop
                extra.append(Example(crop_id, READ, READ, item.text.strip()))
    return examples + extra, {**images, **cropped}, set(cropped)


def sinusoidal_codes(positions: np.ndarray, dim: int) -> np.ndarray:
    """Transformer-style sin/cos codes of ``positions`` (in bins), periods from 2 to 4000 bins."""
    half = dim // 2
    periods = np.geomspace(2.0, 4.0 * LOC_BINS, half)
    angles = 2 * math.pi * positions[:, None] / periods[None, :]
    codes = np.zeros((len(positions), dim), np.float32)
    codes[:, 0:2 * half:2], codes[:, 1:2 * half:2] = np.sin(angles), np.cos(angles)
    return codes


def init_location_embeddings(model, tokenizer, std: float = 0.02) -> None:
    """Give ``<loc_0>``..``<loc_999>`` smooth sinusoidal embeddings of the same scale as the others."""
    ids = tokenizer.convert_tokens_to_ids([f"<loc_{k}>" for k in range(LOC_BINS)])
    embeddings = model.get_input_embeddings()
    codes = torch.from_numpy(sinusoidal_codes(np.arange(LOC_BINS, dtype=np.float64), embeddings.embedding_dim))
    with torch.no_grad():
        embeddings.weight[ids] = codes * std * math.sqrt(2.0)


class DenseHead(nn.Module):
    """Per visual token: category logits (index 0 = background) and its box's four coordinates as
    1000-way logits scored against the model's own (tied) ``<loc_k>`` embeddings: the visual
    tokens learn to carry each box in the very space the decoder has to emit it in."""

    def __init__(self, dim: int, categories: int, loc_embeddings):
        super().__init__()
        self.classes = nn.Linear(dim, categories + 1)
        self.coords = nn.Linear(dim, 4 * dim)
        self.loc_embeddings = loc_embeddings
        """A callable returning the (1000, dim) location embeddings (a view of the model's weights)."""

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coords = self.coords(tokens).unflatten(-1, (4, -1))
        return self.classes(tokens), coords @ self.loc_embeddings().T


def dense_targets(boxes: list[tuple[float, float, float, float]], labels: list[int], grid: int) -> tuple[np.ndarray, np.ndarray]:
    """For a ``grid`` x ``grid`` of cells: the label (0 = none) and normalised box of the smallest
    box covering each cell's centre. ``boxes`` are normalised to [0, 1]."""
    classes = np.zeros(grid * grid, np.int64)
    targets = np.zeros((grid * grid, 4), np.float32)
    centres = (np.arange(grid) + 0.5) / grid
    best = np.full(grid * grid, np.inf)
    for box, label in zip(boxes, labels):
        x1, y1, x2, y2 = box
        inside = ((centres[None, :] >= x1) & (centres[None, :] <= x2)) & ((centres[:, None] >= y1) & (centres[:, None] <= y2))
        area = (x2 - x1) * (y2 - y1)
        cells = np.flatnonzero(inside.ravel() & (area < best))
        classes[cells], targets[cells], best[cells] = label, box, area
    return classes, targets


def dense_loss(head: DenseHead, tokens: torch.Tensor, classes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over categories for every cell, and over location bins for each coordinate
    of the box of every covered cell."""
    logits, coords = head(tokens)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), classes.flatten())
    covered = classes > 0
    if covered.any():
        bins = (boxes[covered] * LOC_BINS).floor().clamp(0, LOC_BINS - 1).long()
        loss = loss + nn.functional.cross_entropy(coords[covered].flatten(0, 1), bins.flatten())
    return loss
