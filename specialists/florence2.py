"""Florence-2 specialists (transformers' native Florence-2): descriptions at three granularities,
object detection, dense region captions, OCR with regions, region proposals, phrase grounding of
captions, and descriptions of regions other specialists proposed. Generation is batched across
images (and across prompts for the tasks that take an input); every box and text is scored from
the generation's own token probabilities."""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.fusion import REREAD
from schemas.geometry import box_in_window, line_window, square_window
from specialists.base import Batch, Resources, Specialist, WeightsError, weights_version
from specialists.columns import region_table
from specialists.florence2_parse import Generated, Item, location_tokens, parse_florence2

log = logging.getLogger(__name__)

GRANULARITY = {"<CAPTION>": "brief", "<DETAILED_CAPTION>": "detailed", "<MORE_DETAILED_CAPTION>": "more_detailed"}
REGION_KIND = {"<OD>": "object", "<DENSE_REGION_CAPTION>": "region_caption", "<OCR_WITH_REGION>": "ocr",
               "<REGION_PROPOSAL>": "proposal"}
GROUNDING = "<CAPTION_TO_PHRASE_GROUNDING>"
REGION_TO_DESCRIPTION = "<REGION_TO_DESCRIPTION>"
OCR = "<OCR_WITH_REGION>"
READ = "<OCR>"
"""Florence-2's plain OCR task: the text of an image, here of a text line's tight crop (``line_crop``)."""
EDGE = 1.0
"""A text read on a crop whose box comes this close (pixels) to a side the crop cut from its image
may be part of a word, and is not kept."""
TASKS = (*GRANULARITY, *REGION_KIND, GROUNDING, REGION_TO_DESCRIPTION, READ)
HOW_TO_GET = ("Give a Florence-2 checkpoint folder in Hugging Face format (config.json, weights and "
              "processor files), e.g. florence-community/Florence-2-base downloaded while online, or one "
              "made by `fld bootstrap`.")


@dataclass(frozen=True)
class Florence2Config:
    checkpoint: str
    tasks: tuple[str, ...] = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>")
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    """Benchmarks only: force long generations from random weights to measure real compute."""
    num_beams: int = 1
    task_beams: dict = field(default_factory=dict)
    """Beam width per task where it is not ``num_beams`` (e.g. ``{"<CAPTION>": 3}``)."""
    device: str = "cpu"
    batch_size: int = 8
    region_kinds: tuple[str, ...] = ("object",)
    """Kinds of prompt regions that <REGION_TO_DESCRIPTION> describes."""
    region_margin: float | None = None
    """How <REGION_TO_DESCRIPTION> sees a box. None: its whole image, with the box's location
    tokens (as released Florence-2 checkpoints are trained). A margin: a square crop around the
    box (its longer side plus this share of it on each side, ``schemas.geometry.square_window``)
    with the box's tokens in the crop, as FLD-5B's region captions are made; for a model trained
    on such crops (the training recipe's ``crop_regions``)."""
    region_size: int | None = None
    """With a ``region_margin``: the side the crops are fed at (None: the checkpoint's image size).
    The vision tower reads any multiple of its stride, and a crop needs fewer pixels than a whole
    image (the recipe's ``region_size``)."""

    region_ocr: bool = False
    """With a ``region_margin``: ``<OCR_WITH_REGION>`` reads the same crops of the prompt regions
    instead of the whole image (one vision pass per crop serves both tasks), its texts placed back
    in the image; for a model trained so (the recipe's ``crop_ocr``)."""
    read_margin: float | None = None
    """With ``<OCR>``: the margin (a share of a line's height) of the tight crop on which it reads
    each prompt region of kind ``ocr`` (another reader's text lines, ``line_crop``), fed at the
    checkpoint's image size; for a model trained so (the recipe's ``read_lines``)."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"unknown Florence-2 task(s) {unknown or '(none given)'}; known: {', '.join(TASKS)}")
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens, num_beams and batch_size must be >= 1")
        wrong = {t: b for t, b in self.task_beams.items() if t not in TASKS or not isinstance(b, int) or b < 1}
        if wrong:
            raise ValueError(f"task_beams takes known tasks and beam widths >= 1, got {wrong}")
        if self.region_margin is not None and not 0.0 <= self.region_margin <= 4.0:
            raise ValueError(f"region_margin must be None or within [0, 4], got {self.region_margin}")
        if self.region_size is not None and (self.region_margin is None or not 16 <= self.region_size <= 1536):
            raise ValueError(f"region_size needs a region_margin and must be within [16, 1536], got {self.region_size}")
        if (READ in self.tasks) != (self.read_margin is not None):
            raise ValueError(f"{READ} reads text lines on crops of a read_margin: give both or neither")
        if self.read_margin is not None and not 0.0 <= self.read_margin <= 2.0:
            raise ValueError(f"read_margin must be within [0, 2] line heights, got {self.read_margin}")
        if self.region_ocr and (self.region_margin is None or OCR not in self.tasks):
            raise ValueError(f"region_ocr reads the crops of a region_margin with {OCR}: give both")

    @property
    def on_crops(self) -> tuple[str, ...]:
        """The tasks that read the crops of the prompt regions (none without a ``region_margin``)."""
        if self.region_margin is None:
            return ()
        return tuple(t for t in self.tasks if t == REGION_TO_DESCRIPTION or (t == OCR and self.region_ocr))


def tables_of(tasks: tuple[str, ...], on_crops: tuple[str, ...] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(produces, needs) of a Florence-2 running ``tasks`` (``on_crops`` of them on the crops of
    prompt regions): descriptions make texts, detection-like tasks, region descriptions and reading
    lines make regions, grounding makes triplets from earlier texts, and reading crops or lines takes
    earlier regions."""
    made = {"texts": any(t in GRANULARITY for t in tasks),
            "regions": any(t in REGION_KIND or t in (REGION_TO_DESCRIPTION, READ) for t in tasks),
            "triplets": GROUNDING in tasks}
    taken = {"texts": GROUNDING in tasks, "regions": REGION_TO_DESCRIPTION in tasks or READ in tasks or bool(on_crops)}
    return tuple(t for t, yes in made.items() if yes), tuple(t for t, yes in taken.items() if yes)


def load_florence2(checkpoint: str, device: str = "cpu"):
    """(model, processor) from a checkpoint folder (or a hub id when online); WeightsError otherwise."""
    from transformers import AutoConfig, AutoProcessor, Florence2ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(checkpoint).expanduser()
    if not path.exists() and (os.environ.get("HF_HUB_OFFLINE") == "1" or checkpoint.startswith((".", "/", "~"))):
        raise WeightsError(f"Florence-2 checkpoint not found at {path}. {HOW_TO_GET}")
    source = str(path) if path.exists() else checkpoint
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise WeightsError(f"{source} is not a Hugging Face checkpoint folder ({err}). {HOW_TO_GET}") from None
    if config.model_type != "florence2":
        raise WeightsError(f"{source} holds a {config.model_type!r} model, not Florence-2. {HOW_TO_GET}")
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = Florence2ForConditionalGeneration.from_pretrained(source).to(device).eval()
    except Exception as err:  # damaged weights or processor files raise many kinds
        raise WeightsError(f"cannot load the Florence-2 checkpoint {source}: {type(err).__name__}: {err}") from None
    tokenizer = processor.tokenizer
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab or "<loc_999>" not in tokenizer.get_vocab():
        raise WeightsError(f"the tokenizer in {source} does not match its model ({len(tokenizer)} tokens for "
                           f"{vocab} embeddings, location tokens {'present' if '<loc_999>' in tokenizer.get_vocab() else 'missing'}): "
                           "a checkpoint from a different tokenizer")
    return model, processor


def region_crop(image: np.ndarray, box, margin: float) -> tuple[np.ndarray, str]:
    """The crop a box is described on (its ``square_window`` with ``margin``) and the
    <REGION_TO_DESCRIPTION> prompt with the box's tokens in it: one for training and serving."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = window = square_window(box, (w, h), margin)
    return image[y1:y2, x1:x2], REGION_TO_DESCRIPTION + location_tokens(box_in_window(box, window), (x2 - x1, y2 - y1))


def line_crop(image: np.ndarray, box, margin: float) -> np.ndarray:
    """The tight crop a text line is read on (``line_window`` with ``margin``): one for training and serving."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = line_window(box, (w, h), margin)
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def resized(processor, side: int):
    """A shallow copy of a Florence-2 ``processor`` that feeds ``side``-pixel squares and counts their
    visual tokens (one per cell of the vision tower's stride, plus the pooled one, as at its own
    size). The same weights read both: the tower is convolutional, its position table 50 x 50."""
    base, tokens = processor.image_processor.size["height"], processor.num_image_tokens
    stride = base // math.isqrt(tokens - 1)
    if side % stride or side < stride:
        raise ValueError(f"a Florence-2 image side must be a multiple of its vision stride {stride}, got {side}")
    out = copy.copy(processor)
    out.image_processor = copy.copy(processor.image_processor)
    out.image_processor.size = out.image_processor.crop_size = {"height": side, "width": side}
    out.num_image_tokens = (side // stride) ** 2 + 1
    return out


class Florence2Specialist(Specialist):
    name = "florence2"
    role = "captioner"

    def __init__(self, config: Florence2Config):
        super().__init__(config.batch_size, Resources(cpus=1.0, gpus=1.0 if config.device.startswith("cuda") else 0.0))
        self.config = config
        self.produces, self.needs = tables_of(config.tasks, config.on_crops)
        self.model = self.processor = None

    def load(self) -> None:
        self.model, self.processor = load_florence2(self.config.checkpoint, self.config.device)
        path = Path(self.config.checkpoint).expanduser()
        self._version = weights_version(path) if path.exists() else self.config.checkpoint

    # -- generation ---------------------------------------------------------------------------
    def encode(self, images: list[np.ndarray], processor=None):
        """The vision tower's projected features of each image, in batches of ``batch_size``: run once
        per image and shared by every task and every prompt (box, caption) of that image.
        ``processor``: one that feeds another size (:func:`resized`; default the checkpoint's)."""
        import torch

        if not images:
            return None
        processor = processor or self.processor
        features = []
        for start in range(0, len(images), self.batch_size):
            pixels = processor.image_processor(images[start : start + self.batch_size], return_tensors="pt")
            with torch.no_grad():
                features.append(self.model.get_image_features(pixels["pixel_values"].to(self.config.device)).pooler_output)
        return torch.cat(features)

    def generate(self, images: list[np.ndarray], prompts: list[str], features=None,
                 of_image: list[int] | None = None, processor=None, beams: int | None = None) -> list[Generated]:
        """One generation per prompt, in batches of ``batch_size``; prompt ``i`` reads image
        ``of_image[i]`` (default: image ``i``), whose vision features ``features`` holds when given
        (from :meth:`encode` with the same ``processor``; computed here otherwise). ``beams``: the
        beam width (default ``num_beams``)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        processor = processor or self.processor
        of_image = list(range(len(prompts))) if of_image is None else of_image
        features = self.encode(images, processor) if features is None else features
        out: list[Generated] = []
        tokenizer = self.processor.tokenizer
        specials = set(tokenizer.all_special_tokens)
        for start in range(0, len(prompts), self.batch_size):
            which = of_image[start : start + self.batch_size]
            inputs = processor(images=[images[k] for k in which], text=prompts[start : start + self.batch_size],
                               return_tensors="pt", padding=True).to(self.config.device)
            inputs.pop("pixel_values")
            seen = BaseModelOutputWithPooling(pooler_output=features[torch.as_tensor(which, device=features.device)])
            with torch.no_grad():
                result = self.model.generate(**inputs, mm_encoder_outputs={"image": seen},
                                             max_new_tokens=self.config.max_new_tokens,
                                             min_new_tokens=self.config.min_new_tokens,
                                             num_beams=beams or self.config.num_beams, do_sample=False,
                                             output_scores=True, return_dict_in_generate=True)
            logprobs = self.model.compute_transition_scores(result.sequences, result.scores,
                                                            getattr(result, "beam_indices", None), normalize_logits=True)
            generated = result.sequences[:, -logprobs.shape[1]:]
            for ids, lp in zip(generated.tolist(), logprobs.exp().tolist()):
                tokens = tokenizer.convert_ids_to_tokens(ids)
                pieces, probs = [], []
                for token, prob in zip(tokens, lp):
                    if token == tokenizer.pad_token:
                        break
                    if token is None:  # an id past the tokenizer (a model with spare embeddings)
                        token = tokenizer.unk_token
                    pieces.append(token if token in specials else tokenizer.convert_tokens_to_string([token]))
                    probs.append(float(prob))
                out.append(Generated(tuple(pieces), tuple(probs)))
        return out

    # -- tasks ----------------------------------------------------------------------------
    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        texts, regions, triplets = [], [], []
        on_crops = self.config.on_crops
        features = None if set(self.config.tasks) <= {*on_crops, READ} else self.encode(batch.images)
        if on_crops:
            regions += self._read_crops(batch, on_crops)
        if READ in self.config.tasks:
            regions.append(self._read_lines(batch))
        for task in self.config.tasks:
            if task in on_crops or task == READ:
                continue
            if task in GRANULARITY or task in REGION_KIND:
                results = self.generate(batch.images, [task] * len(batch), features, beams=self.config.task_beams.get(task))
                for image_id, generated in zip(batch.image_ids, results):
                    items = parse_florence2(generated, task, batch.sizes[image_id])
                    if task in GRANULARITY:
                        texts += [self._text_row(image_id, task, item, batch.round) for item in items[:1]]
                    else:
                        regions.append(self._regions(image_id, task, items, batch.round))
            elif task == GROUNDING:
                triplets += self._ground(batch, features)
            elif task == REGION_TO_DESCRIPTION:
                regions.append(self._describe_regions(batch, features))
        made = {"texts": self.table("texts", texts), "regions": pa.concat_tables([self.table("regions", []), *regions]),
                "triplets": self.table("triplets", triplets)}
        return {t: made[t] for t in self.produces}

    def _text_row(self, image_id: str, task: str, item: Item, round_id: int) -> dict:
        granularity = GRANULARITY[task]
        return {"image_id": image_id, "text_id": f"{image_id}-f2-{granularity}", "granularity": granularity,
                "text": item.text, **self.provenance(round_id, item.score)}

    def _regions(self, image_id: str, task: str, items: list[Item], round_id: int) -> pa.Table:
        kind = REGION_KIND[task]
        items = [i for i in items if i.box[2] > i.box[0] and i.box[3] > i.box[1]]
        scores = [i.score for i in items]
        extra = {"quad": pa.array([list(i.quad) for i in items], pa.list_(pa.float32(), 8))} if kind == "ocr" else {}
        return region_table([image_id] * len(items), np.array([i.box for i in items], np.float32).reshape(-1, 4),
                            [i.text or None for i in items],
                            None if any(s is None for s in scores) else np.array(scores, np.float32),
                            kind=kind, specialist=self.name, version=self.version, round_id=round_id,
                            id_prefix=f"f2{kind[:3]}", extra=extra)

    def _pairs(self, batch: Batch, table: str, kinds: tuple[str, ...] | None = None) -> Iterator[tuple[int, dict]]:
        """(image index, prompt row) of each earlier row of ``table`` on the batch's images; regions
        of ``kinds`` only (default: the config's ``region_kinds``)."""
        index = {image_id: k for k, image_id in enumerate(batch.image_ids)}
        prompts = batch.prompts(table)
        if table == "regions":
            kinds = self.config.region_kinds if kinds is None else kinds
            prompts = prompts.filter(pc.is_in(prompts.column("kind"), pa.array(kinds, pa.string())))
        for row in prompts.to_pylist():
            if row["image_id"] in index:
                yield index[row["image_id"]], row

    def _ground(self, batch: Batch, features) -> list[dict]:
        pairs = list(self._pairs(batch, "texts"))
        results = self.generate(batch.images, [GROUNDING + row["text"] for _, row in pairs], features, [k for k, _ in pairs])
        rows = []
        for (k, source), generated in zip(pairs, results):
            image_id = batch.image_ids[k]
            used: dict[str, int] = {}
            for n, item in enumerate(parse_florence2(generated, GROUNDING, batch.sizes[image_id])):
                start = source["text"].lower().find(item.text.lower(), used.get(item.text.lower(), 0))
                if start < 0:
                    start = source["text"].lower().find(item.text.lower())
                if start < 0:  # a phrase that is not in the caption cannot be given a span
                    self.floor("grounded phrase not in its caption")
                    continue
                used[item.text.lower()] = start + 1
                end = start + len(item.text)
                rows.append({"image_id": image_id, "triplet_id": f"{source['text_id']}-f2g{n}",
                             "text_id": source["text_id"], "text": source["text"],
                             "phrase": source["text"][start:end], "span_start": start, "span_end": end,
                             "box": list(item.box), "mask": None, "region_id": None,
                             "phrase_score": item.phrase_score, **self.provenance(batch.round, item.score)})
        return rows

    def _describe_regions(self, batch: Batch, features) -> pa.Table:
        """Each prompt region described on its whole image, by its location tokens."""
        pairs = list(self._pairs(batch, "regions"))
        prompts = [REGION_TO_DESCRIPTION + location_tokens(row["box"], batch.sizes[row["image_id"]]) for _, row in pairs]
        results = self.generate(batch.images, prompts, features, [k for k, _ in pairs])
        return self._captions(batch, pairs, results)

    def _read_crops(self, batch: Batch, tasks: tuple[str, ...]) -> list[pa.Table]:
        """``tasks`` on each prompt region's crop: one vision pass per crop for all of them."""
        pairs = list(self._pairs(batch, "regions"))
        made = [region_crop(batch.images[k], row["box"], self.config.region_margin) for k, row in pairs]
        crops = [crop for crop, _ in made]
        processor = resized(self.processor, self.config.region_size) if self.config.region_size else None
        features = self.encode(crops, processor)
        out = []
        if REGION_TO_DESCRIPTION in tasks:
            out.append(self._captions(batch, pairs, self.generate(crops, [p for _, p in made], features,
                                                                  processor=processor)))
        if OCR in tasks:
            out.append(self._crop_texts(batch, pairs, crops, self.generate(crops, [OCR] * len(crops), features,
                                                                            processor=processor)))
        return out

    def _read_lines(self, batch: Batch) -> pa.Table:
        """Each earlier text region read again on its tight crop (``<OCR>``): a row of kind ``ocr``
        with the region's box and quad and this model's text, its id the region's and ``REREAD``,
        which the round's fusion merges with the region it read (the same box), and drops with it
        (``filters.fusion.unconfirmed``). A crop it reads no text on gives no row."""
        pairs = list(self._pairs(batch, "regions", ("ocr",)))
        crops = [line_crop(batch.images[k], row["box"], self.config.read_margin) for k, row in pairs]
        results = self.generate(crops, [READ] * len(crops), self.encode(crops)) if crops else []
        rows = []
        for (_, region), generated in zip(pairs, results):
            items = parse_florence2(generated, READ, batch.sizes[region["image_id"]])
            if items:
                rows.append({"image_id": region["image_id"], "region_id": f"{region['region_id']}{REREAD}", "kind": "ocr",
                             "box": region["box"], "quad": region["quad"], "label": items[0].text, "mask": None,
                             **self.provenance(batch.round, items[0].score)})
        return self.table("regions", rows)

    def _captions(self, batch: Batch, pairs: list[tuple[int, dict]], results: list[Generated]) -> pa.Table:
        rows = []
        for (_, region), generated in zip(pairs, results):
            items = parse_florence2(generated, REGION_TO_DESCRIPTION, batch.sizes[region["image_id"]])
            if items:
                rows.append({"image_id": region["image_id"], "region_id": f"{region['region_id']}-f2cap",
                             "kind": "region_caption", "box": region["box"], "label": items[0].text,
                             "mask": region["mask"], **self.provenance(batch.round, items[0].score)})
        return self.table("regions", rows)

    def _crop_texts(self, batch: Batch, pairs: list[tuple[int, dict]], crops: list[np.ndarray],
                    results: list[Generated]) -> pa.Table:
        """The texts read on the crops, placed back in their images. A text whose box touches a side
        the crop cut from its image may be part of a word and is dropped; the same word read on two
        overlapping crops is left to the round's NMS."""
        ids, boxes, quads, labels, scores = [], [], [], [], []
        for (k, region), crop, generated in zip(pairs, crops, results):
            image_id = region["image_id"]
            w, h = batch.sizes[image_id]
            x0, y0, x1, y1 = square_window(region["box"], (w, h), self.config.region_margin)
            cw, ch = crop.shape[1], crop.shape[0]
            for item in parse_florence2(generated, OCR, (cw, ch)):
                bx1, by1, bx2, by2 = item.box
                cut = ((x0 > 0 and bx1 < EDGE) or (y0 > 0 and by1 < EDGE) or (x1 < w and bx2 > cw - EDGE)
                       or (y1 < h and by2 > ch - EDGE))
                if cut or not item.text or bx2 <= bx1 or by2 <= by1:
                    continue
                ids.append(image_id)
                boxes.append([bx1 + x0, by1 + y0, bx2 + x0, by2 + y0])
                quads.append([v + (x0 if i % 2 == 0 else y0) for i, v in enumerate(item.quad)])
                labels.append(item.text)
                scores.append(item.score)
        return region_table(ids, np.array(boxes, np.float32).reshape(-1, 4), labels,
                            None if any(s is None for s in scores) else np.array(scores, np.float32),
                            kind="ocr", specialist=self.name, version=self.version, round_id=batch.round,
                            id_prefix="f2ocr", extra={"quad": pa.array(quads, pa.list_(pa.float32(), 8))})
