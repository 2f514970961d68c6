"""The trivial answer of each task, measured on gold: what a model must beat to be worth anything.

Learnt from the training truth alone, with no look at the image: for detection the box prior (the
mean relative box with the most common label, on every image), for OCR the most common text at
the mean relative text box, for descriptions the most common description of each granularity,
for every image, for region captions the most common region caption on every box it is given
(the gold boxes: a region captioner is measured given them), and for grounding the box prior for
every phrase of the descriptions it is given (the gold ones: a grounder is measured given them). A gate whose floor a constant output clears is
no gate (a captioner that wrote one sentence for 96% of the images once passed a CIDEr floor of
0.1), so the gates take these values as floors too (``engine.loop.gates``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store
from engine.evaluation.evaluate import Evaluator, Measurement
from schemas import schema_for

SOURCE = "trivial"


TRAINING_SPLITS = ("seed",)


def _of_splits(truth: Store, table: str, splits: tuple[str, ...], columns: list[str] | None = None) -> pa.Table:
    images = truth.read("images", columns=["image_id", "split"])
    ids = images.filter(pc.is_in(images.column("split"), pa.array(splits, pa.string()))).column("image_id")
    rows = truth.read(table, columns=columns)
    return rows.filter(pc.is_in(rows.column("image_id"), ids))


def box_prior(truth: Store, splits: tuple[str, ...] = TRAINING_SPLITS, kind: str = "object") -> tuple[np.ndarray, str] | None:
    """The mean box of ``kind`` relative to its image (x1 y1 x2 y2 in 0..1) and the most common label."""
    regions = _of_splits(truth, "regions", splits)
    regions = regions.filter(pc.equal(regions.column("kind"), kind))
    if not regions.num_rows:
        return None
    images = truth.read("images", columns=["image_id", "width", "height"])
    sizes = {i: (w, h) for i, w, h in zip(*(images.column(c).to_pylist() for c in ("image_id", "width", "height")))}
    rel = [[b[0] / sizes[i][0], b[1] / sizes[i][1], b[2] / sizes[i][0], b[3] / sizes[i][1]]
           for i, b in zip(regions.column("image_id").to_pylist(), regions.column("box").to_pylist()) if i in sizes]
    if not rel:
        return None
    return np.asarray(rel).mean(axis=0), Counter(regions.column("label").to_pylist()).most_common(1)[0][0]


def constant_texts(truth: Store, splits: tuple[str, ...] = TRAINING_SPLITS) -> dict[str, str]:
    """The most common description of each granularity (ties: the first in sorted order)."""
    texts = _of_splits(truth, "texts", splits, ["image_id", "granularity", "text"])
    out = {}
    for granularity in sorted(set(texts.column("granularity").to_pylist())):
        said = Counter(t for g, t in zip(texts.column("granularity").to_pylist(), texts.column("text").to_pylist())
                       if g == granularity)
        out[granularity] = min(said.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return out


def _provenance(name: str) -> dict:
    return {"score": 1.0, "round": 0, "specialist": name, "specialist_version": "1", "score_source": "none"}


def trivial_measurements(truth: Store, gold: Store, splits: tuple[str, ...] = TRAINING_SPLITS) -> list[Measurement]:
    """Gold metrics of the trivial answers learnt from the ``splits`` of ``truth`` (the box prior,
    constant texts, every given phrase grounded to the box prior)."""
    images = gold.read("images").to_pylist()
    regions, texts = [], []
    for kind in ("object", "ocr"):
        prior = box_prior(truth, splits, kind)
        if prior is not None:
            box, label = prior
            regions += [{"image_id": g["image_id"], "region_id": f"prior-{kind}-{g['image_id']}", "kind": kind,
                         "box": (box * [g["width"], g["height"], g["width"], g["height"]]).tolist(), "label": label,
                         **_provenance("box-prior")} for g in images]
    caption = box_prior(truth, splits, "region_caption")
    if caption is not None:
        gold_regions = gold.read("regions")
        boxes = gold_regions.filter(pc.equal(gold_regions.column("kind"), "object")).select(["image_id", "region_id", "box"])
        regions += [{**row, "region_id": f"constant-caption-{row['region_id']}", "kind": "region_caption",
                     "label": caption[1], **_provenance("constant-text")} for row in boxes.to_pylist()]
    grounded = []
    object_prior = box_prior(truth, splits, "object")
    if object_prior is not None:
        sizes = {g["image_id"]: (g["width"], g["height"]) for g in images}
        for row in gold.read("triplets").to_pylist():
            w, h = sizes[row["image_id"]]
            grounded.append({**row, "triplet_id": f"prior-{row['triplet_id']}", "region_id": None, "mask": None,
                             "box": (object_prior[0] * [w, h, w, h]).tolist(), "phrase_score": 1.0,
                             **_provenance("box-prior")})
    for granularity, text in constant_texts(truth, splits).items():
        texts += [{"image_id": g["image_id"], "text_id": f"constant-{granularity}-{g['image_id']}",
                   "granularity": granularity, "text": text, **_provenance("constant-text")} for g in images]
    return Evaluator(gold).evaluate({"regions": pa.Table.from_pylist(regions, schema=schema_for("regions")),
                                     "texts": pa.Table.from_pylist(texts, schema=schema_for("texts")),
                                     "grounded": pa.Table.from_pylist(grounded, schema=schema_for("triplets"))})


def trivial_answers(found: list[Measurement]) -> dict[str, float]:
    """``family/metric`` -> the trivial answers' gold value, for the metrics they can be scored on."""
    return {m.key: m.value for m in found if m.value is not None}
