"""A round's kept annotations as Florence-2 multitask examples: (image, task prompt, target text).

One task per annotation family, with the field's quantisation (1000 bins, floor, never
``<loc_1000>``; see :func:`specialists.florence2_parse.quantize`):

    texts (brief/detailed/more_detailed) -> <CAPTION> / <DETAILED_CAPTION> / <MORE_DETAILED_CAPTION>
    regions kind=object                  -> <OD>                    "label<loc>x4 label<loc>x4 ..."
    regions kind=region_caption          -> <DENSE_REGION_CAPTION>  and <REGION_TO_DESCRIPTION>
    regions kind=ocr                     -> <OCR_WITH_REGION>       "text<loc>x8 ..."
    triplets of the brief caption        -> <CAPTION_TO_PHRASE_GROUNDING>caption  "phrase<loc>x4 ..."

Regions are listed in raster order of their top-left corner, as Florence-2's targets are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa

from schemas.geometry import box_array
from specialists.florence2 import GROUNDING, REGION_TO_DESCRIPTION
from specialists.florence2_parse import location_tokens

CAPTION_TASKS = {"brief": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more_detailed": "<MORE_DETAILED_CAPTION>"}
REGION_TASKS = {"object": "<OD>", "region_caption": "<DENSE_REGION_CAPTION>", "ocr": "<OCR_WITH_REGION>"}
FAMILY_OF_TASK = {
    "<CAPTION>": "text", "<DETAILED_CAPTION>": "text", "<MORE_DETAILED_CAPTION>": "text",
    "<OD>": "object", "<DENSE_REGION_CAPTION>": "region_caption", "<REGION_TO_DESCRIPTION>": "region_caption",
    "<OCR_WITH_REGION>": "ocr", GROUNDING: "grounding",
}  # fmt: skip
ALL_TASKS = tuple(FAMILY_OF_TASK)


@dataclass(frozen=True)
class Example:
    image_id: str
    task: str
    prompt: str
    """What the processor is given: the task token, followed by its input for tasks that take one."""
    target: str


def _raster(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (round(r["box"][1]), round(r["box"][0])))


def build_examples(texts: pa.Table, regions: pa.Table, triplets: pa.Table, sizes: dict[str, tuple[int, int]],
                   tasks: tuple[str, ...] = ALL_TASKS) -> list[Example]:
    """Examples for ``tasks`` from annotation tables; images without a size are skipped."""
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown:
        raise ValueError(f"unknown Florence-2 training task(s) {unknown}; known: {', '.join(ALL_TASKS)}")
    out: list[Example] = []
    for row in texts.select(["image_id", "granularity", "text"]).to_pylist():
        task = CAPTION_TASKS[row["granularity"]]
        if task in tasks and row["image_id"] in sizes and row["text"].strip():
            out.append(Example(row["image_id"], task, task, row["text"].strip()))
    by_kind: dict[tuple[str, str], list[dict]] = defaultdict(list)
    if regions.num_rows:
        boxes = box_array(regions.column("box"))
        for row, box in zip(regions.select(["image_id", "kind", "label", "quad"]).to_pylist(), boxes.tolist()):
            if row["image_id"] in sizes and row["kind"] in REGION_TASKS and (row["label"] or "").strip():
                by_kind[(row["image_id"], row["kind"])].append({**row, "box": box})
    for (image_id, kind), rows in sorted(by_kind.items()):
        size, task = sizes[image_id], REGION_TASKS[kind]
        rows = _raster(rows)
        if task in tasks:
            if kind == "ocr":
                quads = [r["quad"] or _box_quad(r["box"]) for r in rows]
                target = "".join(r["label"].strip() + location_tokens(q, size) for r, q in zip(rows, quads))
            else:
                target = "".join(r["label"].strip() + location_tokens(r["box"], size) for r in rows)
            out.append(Example(image_id, task, task, target))
        if kind == "region_caption" and REGION_TO_DESCRIPTION in tasks:
            out += [Example(image_id, REGION_TO_DESCRIPTION, REGION_TO_DESCRIPTION + location_tokens(r["box"], size),
                            r["label"].strip()) for r in rows]
    if GROUNDING in tasks:
        out += _grounding(texts, triplets, sizes)
    return out


def _box_quad(box) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def _grounding(texts: pa.Table, triplets: pa.Table, sizes) -> list[Example]:
    """Each brief caption with its grounded phrases, in the order they appear in the caption."""
    if not triplets.num_rows:
        return []
    brief = {r["text_id"]: r for r in texts.select(["text_id", "granularity"]).to_pylist() if r["granularity"] == "brief"}
    phrases: dict[str, list[dict]] = defaultdict(list)
    boxes = box_array(triplets.column("box"))
    for row, box in zip(triplets.select(["image_id", "text_id", "text", "phrase", "span_start"]).to_pylist(),
                        boxes.tolist()):
        if row["text_id"] in brief and row["image_id"] in sizes:
            phrases[row["text_id"]].append({**row, "box": box})
    out = []
    for rows in phrases.values():
        rows.sort(key=lambda r: (r["span_start"], r["box"][0], r["box"][1]))
        image_id, caption, size = rows[0]["image_id"], rows[0]["text"], sizes[rows[0]["image_id"]]
        target, last = "", None
        for r in rows:  # several boxes for one phrase: "phrase<box1><box2>"
            if r["span_start"] != last:
                target += r["phrase"]
                last = r["span_start"]
            target += location_tokens(r["box"], size)
        out.append(Example(image_id, GROUNDING, GROUNDING + caption, target))
    return out
