"""Training a Florence-2 (tiny from nothing, or base/large from a pretrained folder) on multitask
examples, on a CPU or a GPU, with a resumable training state.

The loop: examples are grouped by task and sampled by task weight; each batch's images go once
through the vision tower; the loss is the decoder's cross-entropy plus, for the recipe's dense
head, the auxiliary detection loss on the visual tokens (see ``florence2_recipe``). Every
``save_every`` steps the whole state (model, head, optimiser, step, RNG) is written atomically,
so an interrupted run resumes where it was.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from specialists.florence2_parse import parse_florence2
from specialists.training.florence2_examples import Example

log = logging.getLogger(__name__)
STATE = "train_state.pt"


@dataclass(frozen=True)
class Florence2TrainConfig:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    vision_lr: float | None = None
    """Learning rate of the vision tower and projector (defaults to ``lr``)."""
    warmup: int = 30
    weight_decay: float = 0.01
    aux_weight: float = 1.0
    """Weight of the dense auxiliary head's loss; 0 turns the head off."""
    attention_weight: float = 1.0
    """Weight of the supervised cross-attention loss on <OD> targets; 0 turns it off."""
    vision_steps: int = 0
    """Steps (counted in ``steps``) that first train only the vision tower with the dense head,
    warm-starting it on the seed split before the decoder sees it (about 3x cheaper a step)."""
    structured_locations: bool = True
    flip_od: bool = False
    """Also train on each <OD> example mirrored left to right (``florence2_recipe.with_mirrored_od``)."""
    crop_od: int = 0
    """Also train on each <OD> example on this many seeded random crops of its image
    (``florence2_recipe.with_cropped_od``; mirrored too with ``flip_od``)."""
    crop_regions: float | None = None
    """Train <REGION_TO_DESCRIPTION> on square crops of its boxes with this margin instead of on
    whole images (``florence2_recipe.with_cropped_regions``); the trained model is then served on
    crops with the same margin (``Florence2Config.region_margin``)."""
    region_size: int | None = None
    """With ``crop_regions``: the side those crops are fed at (None: the processor's image size),
    and then served at (``Florence2Config.region_size``). A crop needs fewer pixels than an image:
    112 px trained 4x and served 2x faster than 224 on the 2 cores, at least as well."""
    crop_ocr: bool = False
    """Also train <OCR_WITH_REGION> on the crops of each image's object boxes, as ``crop_regions``
    makes them (``florence2_recipe.with_cropped_ocr``); the trained model then reads the text on
    the crops of the boxes it describes (``Florence2Config.region_ocr``)."""
    ocr_views: int = 1
    """With ``crop_ocr``: each crop that holds text seen through this many (jittered) windows; with
    ``read_lines``, each text line."""
    read_lines: float | None = None
    """A margin (a share of the line's height): also train ``<OCR>`` on the tight crop of each text
    region, fed at the processor's size (``florence2_recipe.with_read_lines``); the trained model
    then reads the round's text regions so (``Florence2Config.read_margin``)."""
    corrupt_views: bool = False
    """With ``read_lines`` and ``ocr_views`` > 1: each jittered view of a line also through a seeded
    photometric corruption (``florence2_recipe.corrupted``: lighting, blur, noise, JPEG)."""
    task_weights: dict = field(default_factory=lambda: {"<OD>": 3.0})
    """Sampling weight per task (1.0 for tasks not named)."""
    example_mean: bool = False
    """The decoder's loss as the mean over examples of each example's mean over its target tokens,
    so that every example counts the same, instead of the mean over all the batch's target tokens
    (transformers' own), where a word read on a text line (2 tokens) weighs 1/50 of a box list:
    mixed so with the other tasks, reading stayed at chance (docs/FLORENCE2_RECIPE.md, "Reading
    text lines")."""
    max_target_tokens: int = 160
    save_every: int = 100
    log_every: int = 100
    """Log the loss every this many steps."""
    max_minutes: float | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.save_every < 1 or not 0 <= self.vision_steps < self.steps:
            raise ValueError("steps, batch_size and save_every must be >= 1")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if not 0 <= self.crop_od <= 16:
            raise ValueError(f"crop_od must be within 0..16 crops per <OD> example, got {self.crop_od}")
        if self.crop_regions is not None and not 0.0 <= self.crop_regions <= 4.0:
            raise ValueError(f"crop_regions must be None or a margin within [0, 4], got {self.crop_regions}")
        if self.region_size is not None and (self.crop_regions is None or not 16 <= self.region_size <= 1536):
            raise ValueError(f"region_size needs crop_regions and must be within [16, 1536], got {self.region_size}")
        if not 1 <= self.ocr_views <= 16:
            raise ValueError(f"ocr_views must be within 1..16, got {self.ocr_views}")
        if self.read_lines is not None and not 0.0 <= self.read_lines <= 2.0:
            raise ValueError(f"read_lines must be None or a margin within [0, 2] line heights, got {self.read_lines}")
        if self.corrupt_views and (self.read_lines is None or self.ocr_views < 2):
            raise ValueError("corrupt_views corrupts the jittered views of read_lines: give read_lines a margin "
                             "and ocr_views >= 2")
        if self.crop_ocr and self.crop_regions is None:
            raise ValueError("crop_ocr reads the crops crop_regions makes: give crop_regions a margin")
        if not (self.lr > 0 and (self.vision_lr is None or self.vision_lr > 0)):
            raise ValueError(f"learning rates must be > 0, got {self.lr} / {self.vision_lr}")
        if self.aux_weight < 0 or self.attention_weight < 0 or any(w < 0 for w in self.task_weights.values()):
            raise ValueError("aux_weight and task weights must be >= 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    examples: int
    tasks: dict[str, int]
    curve: list[dict]
    resumed_from: int = 0

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


class Batches:
    """Tokenised examples grouped by task, with the pixel values of their images computed once.
    ``sides``: images fed at another side than the processor's (region crops), by image id."""

    def __init__(self, examples: list[Example], images: dict[str, np.ndarray], processor, max_target_tokens: int,
                 sides: dict[str, int] | None = None):
        import torch

        from specialists.florence2 import resized

        missing = sorted({e.image_id for e in examples} - set(images))
        if missing:
            raise ValueError(f"{len(missing)} example image(s) have no pixels, e.g. {missing[0]}")
        self.processor = processor
        tokenizer = processor.tokenizer
        self.image_ids = sorted({e.image_id for e in examples})
        sides = sides or {}
        base = processor.image_processor.size["height"]
        self.side = [sides.get(i, base) for i in self.image_ids]
        feeds = {side: processor if side == base else resized(processor, side) for side in set(self.side)}
        self.pixels, index = {}, {}
        for side, feed in feeds.items():
            ids = [i for i, s in zip(self.image_ids, self.side) if s == side]
            index.update({image_id: (side, row) for row, image_id in enumerate(ids)})
            self.pixels[side] = torch.cat([
                feed.image_processor([images[i] for i in ids[s:s + 64]], return_tensors="pt")["pixel_values"]
                for s in range(0, len(ids), 64)
            ])
        self.rows = [index[i][1] for i in self.image_ids]
        prompts = processor._construct_prompts([e.prompt for e in examples])
        heads = {side: processor.image_token * feed.num_image_tokens + tokenizer.bos_token for side, feed in feeds.items()}
        inputs = tokenizer([heads[index[e.image_id][0]] + p + tokenizer.eos_token for e, p in zip(examples, prompts)],
                           add_special_tokens=False)["input_ids"]
        targets = tokenizer([e.target for e in examples], truncation=True, max_length=max_target_tokens)["input_ids"]
        images_of = {image_id: k for k, image_id in enumerate(self.image_ids)}
        self.items = [(images_of[e.image_id], i, t) for e, i, t in zip(examples, inputs, targets)]
        self.grid = int(math.isqrt(processor.num_image_tokens - 1))
        loc_ids = tokenizer.convert_tokens_to_ids([f"<loc_{k}>" for k in range(1000)])
        self.loc_bin = {token_id: k for k, token_id in enumerate(loc_ids)}
        self.specials = set(tokenizer.all_special_ids) - set(loc_ids)
        self.looks = [self._looks(t) if e.task == "<OD>" else None for e, t in zip(examples, targets)]
        self.by_task: dict[str, list[int]] = defaultdict(list)
        for k, e in enumerate(examples):
            self.by_task[e.task].append(k)
        self.pad = tokenizer.pad_token_id

    def by_side(self, picks: list[int]) -> list[list[int]]:
        """``picks`` grouped by the side of their images (first seen first): one forward pass each."""
        groups: dict[int, list[int]] = {}
        for k in picks:
            groups.setdefault(self.side[self.items[k][0]], []).append(k)
        return list(groups.values())

    def pixel_values(self, image_rows: list[int]):
        """The pixel values of a batch's images (one side)."""
        import torch

        side = self.side[image_rows[0]]
        return self.pixels[side][torch.as_tensor([self.rows[k] for k in image_rows])]

    def _looks(self, target: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Where each target token should look: its object's index (-1: none), and each object's
        cells on the visual-token grid (those whose centre its box covers; at least one)."""
        owner, boxes, current, obj = np.full(len(target), -1, np.int64), [], [], 0
        for t, token in enumerate(target):
            if token in self.loc_bin:
                owner[t] = obj
                current.append(self.loc_bin[token] / 1000)
                if len(current) == 4:
                    boxes.append(current)
                    current, obj = [], obj + 1
            elif token not in self.specials:
                owner[t] = obj
        owner[owner >= len(boxes)] = -1
        g = self.grid
        centres = (np.arange(g) + 0.5) / g
        cells = np.zeros((max(len(boxes), 1), g * g), np.float32)
        for j, (x1, y1, x2, y2) in enumerate(boxes):
            inside = (centres[None, :] >= x1) & (centres[None, :] <= x2) & (centres[:, None] >= y1) & (centres[:, None] <= y2)
            if not inside.any():
                row, col = min(int((y1 + y2) / 2 * g), g - 1), min(int((x1 + x2) / 2 * g), g - 1)
                inside[row, col] = True
            cells[j] = inside.ravel()
        return owner, cells

    def look_targets(self, picks: list[int], length: int):
        """(B, T, cells) where each target position should look, and (B, T) which positions have one."""
        import torch

        where = torch.zeros((len(picks), length, self.grid * self.grid))
        valid = torch.zeros((len(picks), length))
        for b, k in enumerate(picks):
            if self.looks[k] is None:
                continue
            owner, cells = self.looks[k]
            t = np.flatnonzero(owner >= 0)
            where[b, t] = torch.from_numpy(cells[owner[t]])
            valid[b, t] = 1.0
        return where, valid

    def collate(self, picks: list[int]):
        import torch

        rows = [self.items[k] for k in picks]
        n_in, n_out = max(len(r[1]) for r in rows), max(len(r[2]) for r in rows)
        input_ids = torch.full((len(rows), n_in), self.pad)
        attention = torch.zeros((len(rows), n_in), dtype=torch.long)
        labels = torch.full((len(rows), n_out), -100)
        for k, (_, ids, target) in enumerate(rows):
            input_ids[k, :len(ids)] = torch.tensor(ids)
            attention[k, :len(ids)] = 1
            labels[k, :len(target)] = torch.tensor(target)
        return [r[0] for r in rows], input_ids, attention, labels


def dense_data(examples: list[Example], batches: Batches, grid: int):
    """Per image: the dense head's targets from its <OD> example; and the category list."""
    from specialists.training.florence2_recipe import dense_targets

    od = {e.image_id: parse_florence2(e.target, "<OD>", (1000, 1000)) for e in examples if e.task == "<OD>"}
    categories = sorted({item.text for items in od.values() for item in items})
    code = {c: k + 1 for k, c in enumerate(categories)}
    classes = np.zeros((len(batches.image_ids), grid * grid), np.int64)
    boxes = np.zeros((len(batches.image_ids), grid * grid, 4), np.float32)
    for k, image_id in enumerate(batches.image_ids):
        items = od.get(image_id, [])
        classes[k], boxes[k] = dense_targets([tuple(v / 1000 for v in i.box) for i in items],
                                             [code[i.text] for i in items], grid)
    return categories, classes, boxes


def per_example_loss(logits, labels):
    """The mean over examples of each one's mean cross-entropy over its target tokens (label -100: none)."""
    import torch.nn.functional as F

    losses = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    valid = (labels != -100).float()
    counted = valid.sum(1)
    per_example = (losses * valid).sum(1) / counted.clamp(min=1.0)
    return per_example[counted > 0].mean()


def train_florence2(model, processor, examples: list[Example], images: dict[str, np.ndarray], out: str | Path,
                    config: Florence2TrainConfig, fresh: bool = False,
                    evaluate: Callable[[object, int, float], dict] | None = None, eval_every: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``examples``; state in ``out`` (resumed from when present)."""
    import torch

    from specialists.training.florence2_recipe import (DenseHead, dense_loss, init_location_embeddings, with_cropped_ocr,
                                                       with_cropped_od, with_cropped_regions, with_mirrored_od,
                                                       with_read_lines)

    if not examples:
        raise ValueError("no training examples: the round kept no annotations of any trained task")
    n_given = len(examples)
    crops: set[str] = set()
    if config.crop_ocr:  # before the <OD> copies: a mirrored sign's crop would teach that it says nothing
        examples, images, crops = with_cropped_ocr(examples, images, config.crop_regions, config.seed,
                                                    config.ocr_views)
    lines: set[str] = set()
    if config.read_lines is not None:  # fed at the processor's own size, not a region crop's
        examples, images, lines = with_read_lines(examples, images, config.read_lines, config.seed, config.ocr_views,
                                                  config.corrupt_views)
    if config.crop_od:
        examples, images = with_cropped_od(examples, images, config.crop_od, config.seed)
    if config.flip_od:
        examples, images = with_mirrored_od(examples, images)
    if config.crop_regions is not None:
        examples, with_crops = with_cropped_regions(examples, images, config.crop_regions)
        crops |= set(with_crops) - set(images)
        images = with_crops
    sides = dict.fromkeys(crops, config.region_size) if config.region_size else {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    batches = Batches(examples, images, processor, config.max_target_tokens, sides)
    grid = int(math.isqrt(processor.num_image_tokens - 1))
    categories, dense_classes, dense_boxes = dense_data(examples, batches, grid)
    dense_known = torch.tensor([i not in crops and i not in lines for i in batches.image_ids])
    """The dense head learns whole images' boxes; a region's crop has no <OD> example to learn from."""
    loc_ids = torch.tensor(processor.tokenizer.convert_tokens_to_ids([f"<loc_{k}>" for k in range(1000)]))
    head = (DenseHead(model.config.text_config.d_model, len(categories),
                      lambda: model.get_input_embeddings().weight[loc_ids.to(config.device)])
            if config.aux_weight and categories else None)
    if fresh and config.structured_locations:
        init_location_embeddings(model, processor.tokenizer)
    if config.attention_weight:
        model.set_attn_implementation("eager")  # supervised cross-attention needs the weights
    model.to(config.device).train()
    if head is not None:
        head.to(config.device)
    vision = [p for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n]
    vision_ids = {id(p) for p in vision}
    rest = [p for p in model.parameters() if id(p) not in vision_ids] + (list(head.parameters()) if head else [])
    optimizer = torch.optim.AdamW([{"params": vision, "lr": config.vision_lr or config.lr},
                                   {"params": rest, "lr": config.lr}], weight_decay=config.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    captured: dict[str, torch.Tensor] = {}
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.__setitem__("v", o))
    state_path, start = out / STATE, 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state["config"] == config.to_dict() and state["examples"] == n_given:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if head and state.get("head"):
                head.load_state_dict(state["head"])
            start = state["step"]
            rng.setstate(state["rng"])
            torch.set_rng_state(state["torch_rng"])
            log.info("resuming Florence-2 training at step %d from %s", start, state_path)
        else:
            log.info("ignoring %s: it was saved for other training settings", state_path)
    tasks = sorted(batches.by_task)
    weights = [config.task_weights.get(t, 1.0) * 1.0 for t in tasks]
    started, curve, step = time.monotonic(), [], start
    dense_classes_t, dense_boxes_t = torch.from_numpy(dense_classes), torch.from_numpy(dense_boxes)

    def batch_loss(picks: list[int]):
        """The loss of examples whose images share a side, and its decoder part."""
        image_rows, input_ids, attention, labels = batches.collate(picks)
        pixels = batches.pixel_values(image_rows).to(config.device)
        known = dense_known[image_rows]
        look = config.attention_weight > 0 and any(batches.looks[k] is not None for k in picks)
        labels = labels.to(config.device)
        output = model(input_ids=input_ids.to(config.device), attention_mask=attention.to(config.device),
                       pixel_values=pixels, labels=labels, output_attentions=look)
        decoder = per_example_loss(output.logits, labels) if config.example_mean else output.loss
        loss = decoder
        if look:
            where, valid = batches.look_targets(picks, labels.shape[1])
            attended = output.cross_attentions[-1].mean(1)[:, :, 1:1 + where.shape[-1]]
            mass = (attended * where.to(config.device)).sum(-1)
            valid = valid.to(config.device)
            loss = loss + config.attention_weight * -(torch.log(mass + 1e-6) * valid).sum() / valid.sum()
        if head is not None and known.any():
            tokens = captured["v"][known.to(config.device), 1:, :]
            loss = loss + config.aux_weight * dense_loss(head, tokens, dense_classes_t[image_rows][known].to(config.device),
                                                         dense_boxes_t[image_rows][known].to(config.device))
        return loss, decoder

    try:
        for step in range(start, config.steps):
            factor = min(1.0, (step + 1) / config.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * factor
            picks = [rng.choice(batches.by_task[rng.choices(tasks, weights)[0]]) for _ in range(config.batch_size)]
            if step < config.vision_steps and head is not None:
                rows = [r for r in (batches.items[k][0] for k in picks) if dense_known[r]]
                if rows:
                    tokens = model.model.get_image_features(batches.pixel_values(rows).to(config.device)).pooler_output[:, 1:, :]
                    loss = dense_loss(head, tokens, dense_classes_t[rows].to(config.device), dense_boxes_t[rows].to(config.device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                if progress:
                    progress(step + 1, config.steps)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = decoder_loss = 0.0
            for side_picks in batches.by_side(picks):  # one forward pass per image side; gradients add up
                share = len(side_picks) / len(picks)
                group_loss, group_decoder = batch_loss(side_picks)
                (group_loss * share).backward()
                loss, decoder_loss = loss + float(group_loss.detach()) * share, decoder_loss + float(group_decoder.detach()) * share
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done = step + 1
            if progress:
                progress(done, config.steps)
            if done % config.log_every == 0:
                log.info("Florence-2 step %d/%d: loss %.4f (%.1f min)", done, config.steps, loss,
                         (time.monotonic() - started) / 60)
            if done % config.save_every == 0 or done == config.steps:
                _save_state(state_path, model, head, optimizer, done, rng, config, n_given)
            if evaluate and eval_every and (done % eval_every == 0 or done == config.steps):
                model.eval()
                curve.append({"step": done, "minutes": (time.monotonic() - started) / 60, "loss": decoder_loss,
                              **evaluate(model, done, (time.monotonic() - started) / 60)})
                model.train()
            if config.max_minutes and time.monotonic() - started > config.max_minutes * 60:
                log.warning("Florence-2 training stopped at step %d of %d: the %.1f-minute budget is spent",
                            done, config.steps, config.max_minutes)
                _save_state(state_path, model, head, optimizer, done, rng, config, n_given)
                break
    finally:
        hook.remove()
        if config.attention_weight:
            model.set_attn_implementation("sdpa")  # eager was only for reading the attention weights
    model.eval()
    seconds = time.monotonic() - started
    counts = {t: len(v) for t, v in batches.by_task.items()}
    trained = step + 1 - start if config.steps > start else 0
    return TrainResult(trained, seconds, trained * config.batch_size, counts, curve, start)


def _save_state(path: Path, model, head, optimizer, step: int, rng: random.Random, config, n_examples: int) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"model": model.state_dict(), "head": head.state_dict() if head else None,
                "optimizer": optimizer.state_dict(), "step": step, "rng": rng.getstate(),
                "torch_rng": torch.get_rng_state(), "config": config.to_dict(), "examples": n_examples}, tmp)
    os.replace(tmp, path)
