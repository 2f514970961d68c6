"""The evaluator: quality of a round's annotations on the gold split, against the gold truth.

Families and metrics (written to the ``metrics`` table, shown by ``fld metrics``):
- region-text: detection precision / recall / F1 at IoU >= 0.5 with label match (greedy,
  highest score first), COCO mAP and mAP50 through pycocotools (when every box has a score), the
  mean box IoU of the matched pairs (detection_box_iou: how well the found objects are placed),
  mean mask IoU of matched pairs that both have masks, OCR word precision / recall / F1, and
  region captions' word F1 (words of each caption whose box matches a gold region caption's
  with IoU >= 0.5, against all predicted and all gold region-caption words), object (the
  share of box-matched captions that name the gold caption's object category) and text (of the
  box-matched captions that quote text, in capitals or quotation marks, the share whose quoted
  words are all in the gold caption: does a sign's caption say what the sign says?);
- text, per granularity: BLEU-4, CIDEr-D and ROUGE-L (pycocoevalcap, our tokenizer: no Java),
  coverage (gold images with a description), and for each description how many of the image's
  ground-truth object categories it mentions (object recall) and how many it names that are
  not there (hallucination), distinct descriptions per described image (distinct: a
  collapsed captioner's is near 0), and of the descriptions that quote text (capitals or
  quotation marks: "a sign that says STOP") the share whose quoted words the image's text holds
  (quoted_text);
- text-phrase-region: grounding recall@1, as Flickr30k Entities (and Florence-2's paper) measure
  a grounder: given the gold descriptions, for each ground-truth (image, phrase) the grounded
  triplet with the same normalised phrase and the highest score must overlap one of the phrase's
  boxes with IoU >= 0.5 (scored on ``grounded``: the triplets a grounder made given the gold
  descriptions; None without them); triplet recall, the same on the round's own triplets (how
  many of the truth's phrases the dataset holds, word for word and boxed right: bounded by what
  the round's descriptions say); and triplet precision: of the round's triplets whose phrase
  names an object category, the share whose box overlaps (IoU >= 0.5) a ground-truth object of a
  category it names (are the triplets the dataset holds right?).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from engine.dataset.store import Store
from engine.evaluation.noise import Interval, Units, interval
from engine.world.vocab import CATEGORIES, plural
from filters.captions import quoted, words_of
from schemas import GRANULARITIES, schema_for
from schemas.geometry import box_iou, match_boxes, rows_by_image
from schemas.masks import rle_iou

ARTICLES = {"a", "an", "the"}
WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class EvalConfig:
    iou: float = 0.5
    categories: tuple[str, ...] = CATEGORIES
    """Category words looked for in descriptions (object recall and hallucination)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.iou < 1.0:
            raise ValueError(f"iou must be within (0, 1), got {self.iou}")


@dataclass(frozen=True)
class Measurement:
    """One gold metric: its value and, where it is a ratio of per-image sums, those per-image
    units (for its interval and for paired comparisons between rounds)."""

    family: str
    metric: str
    value: float | None
    units: Units | None = None

    @property
    def key(self) -> str:
        return f"{self.family}/{self.metric}"

    def interval(self) -> Interval | None:
        return interval(self.units) if self.value is not None else None


def tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


def normalise_phrase(text: str) -> str:
    return " ".join(t for t in tokens(text) if t not in ARTICLES)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _prf(tp: int, n_pred: int, n_gt: int) -> tuple[float | None, float | None, float | None]:
    precision = tp / n_pred if n_pred else None
    recall = tp / n_gt if n_gt else None
    if recall == 0.0:  # truth to find and none found: F1 is 0 whether or not anything was predicted
        return precision, recall, 0.0
    if precision is None or recall is None:
        return precision, recall, None
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def coco_map(pred: dict[str, list[dict]], gt: dict[str, list[dict]], images: list[str]) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) of scored boxes with pycocotools."""
    labels = sorted({r["label"] for rows in (*gt.values(), *pred.values()) for r in rows})
    cat = {label: k + 1 for k, label in enumerate(labels)}
    img = {image: k + 1 for k, image in enumerate(images)}
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    annotations = [
        {"id": n + 1, "image_id": img[r["image_id"]], "category_id": cat[r["label"]], "bbox": xywh(r["box"]),
         "area": (r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]), "iscrowd": 0}
        for n, r in enumerate(r for image in images for r in gt.get(image, []))
    ]
    detections = [
        {"image_id": img[r["image_id"]], "category_id": cat[r["label"]], "bbox": xywh(r["box"]), "score": r["score"]}
        for image in images for r in pred.get(image, [])
    ]
    if not detections or not annotations:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": [{"id": k} for k in img.values()], "annotations": annotations,
                         "categories": [{"id": k, "name": n} for n, k in cat.items()]}
        truth.createIndex()
        found = truth.loadRes(detections)
        coco = COCOeval(truth, found, "bbox")
        coco.evaluate()
        coco.accumulate()
        coco.summarize()
    return max(float(coco.stats[0]), 0.0), max(float(coco.stats[1]), 0.0)


class Evaluator:
    """Compares predicted annotations with truth on the truth's images."""

    def __init__(self, truth: Store, config: EvalConfig = EvalConfig(), images: Sequence[str] | None = None):
        """``images``: only these of the truth's images (a sample, one split of a world's truth)."""
        self.config = config
        listed = truth.read("images").column("image_id").to_pylist()
        self.images = sorted(listed if images is None else set(listed) & set(images))
        self.truth = {t: truth.read(t) for t in ("texts", "regions", "triplets")}
        if images is not None:
            self.truth = {t: self._restrict(table) for t, table in self.truth.items()}

    def _restrict(self, table: pa.Table) -> pa.Table:
        return table.filter(pc.is_in(table.column("image_id"), pa.array(self.images, pa.string())))

    def evaluate(self, predictions: dict[str, pa.Table]) -> list[Measurement]:
        """Every metric; value None where it cannot be measured. ``predictions``: ``texts``,
        ``regions``, ``triplets`` and, optionally, ``grounded`` (triplets made given the gold
        descriptions)."""
        pred = {t: self._restrict(predictions.get(t, schema_for(t).empty_table())) for t in ("texts", "regions", "triplets")}
        grounded = predictions.get("grounded")
        return [*self._regions(pred["regions"]), *self._texts(pred["texts"]),
                *self._grounding(pred["triplets"], None if grounded is None else self._restrict(grounded))]

    def _kind(self, table: pa.Table, kind: str) -> dict[str, list[dict]]:
        return rows_by_image(table.filter(pc.equal(table.column("kind"), kind)))

    def _regions(self, regions: pa.Table):
        iou = self.config.iou
        pred, gt = self._kind(regions, "object"), self._kind(self.truth["regions"], "object")
        tp = n_pred = n_gt = 0
        mask_ious = []
        counts, masks, covered, placed = {}, {}, {}, {}
        for image in self.images:
            p, g = pred.get(image, []), gt.get(image, [])
            matches = match_boxes(p, g, iou)
            tp, n_pred, n_gt = tp + len(matches), n_pred + len(p), n_gt + len(g)
            counts[image] = (len(matches), len(p), len(g))
            placed[image] = (float(sum(o for _, _, o in matches)), len(matches))
            pairs = [(p[i]["mask"], g[j]["mask"]) for i, j, _ in matches if p[i]["mask"] and g[j]["mask"]]
            found = np.diag(rle_iou([a for a, _ in pairs], [b for _, b in pairs])).tolist() if pairs else []
            mask_ious.extend(found)
            masks[image] = (float(sum(found)), len(found))
            covered[image] = (len(pairs), sum(1 for _, j, _ in matches if g[j]["mask"]))
        precision, recall, f1 = _prf(tp, n_pred, n_gt)
        scored = n_pred and all(r["score"] is not None for rows in pred.values() for r in rows)
        m, m50 = coco_map(pred, gt, self.images) if scored else (None, None)
        ocr_pred, ocr_gt = self._kind(regions, "ocr"), self._kind(self.truth["regions"], "ocr")
        hit = said = truth_words = 0
        words = {}
        for image in self.images:
            words_p = Counter(w for r in ocr_pred.get(image, []) for w in r["label"].upper().split())
            words_g = Counter(w for r in ocr_gt.get(image, []) for w in r["label"].upper().split())
            words[image] = (sum((words_p & words_g).values()), sum(words_p.values()), sum(words_g.values()))
            hit += words[image][0]
            said, truth_words = said + words[image][1], truth_words + words[image][2]
        captions = self._region_captions(regions)
        family = "region-text"
        per = lambda table, num, den: Units.of({i: (num(v), den(v)) for i, v in table.items()})  # noqa: E731
        coverage = per(covered, lambda c: c[0], lambda c: c[1])
        return [
            Measurement(family, "detection_precision", precision, per(counts, lambda c: c[0], lambda c: c[1])),
            Measurement(family, "detection_recall", recall, per(counts, lambda c: c[0], lambda c: c[2])),
            Measurement(family, "detection_f1", f1, per(counts, lambda c: 2 * c[0], lambda c: c[1] + c[2])),
            Measurement(family, "detection_map", m), Measurement(family, "detection_map50", m50),
            # how well the found objects are placed, which F1 at IoU 0.5 does not see: refinement rounds
            # learn from their own boxes, and a round's masks follow its boxes
            Measurement(family, "detection_box_iou", _ratio(sum(c[0] for c in placed.values()),
                                                            sum(c[1] for c in placed.values())),
                        per(placed, lambda c: c[0], lambda c: c[1])),
            Measurement(family, "mask_iou", float(np.mean(mask_ious)) if mask_ious else None,
                        per(masks, lambda c: c[0], lambda c: c[1])),
            # mask IoU is over the masks made: the share of matched objects given one says what it leaves out
            Measurement(family, "mask_coverage", coverage.value, coverage),
            Measurement(family, "ocr_word_precision", hit / said if said else None,
                        per(words, lambda c: c[0], lambda c: c[1])),
            Measurement(family, "ocr_word_recall", hit / truth_words if truth_words else None,
                        per(words, lambda c: c[0], lambda c: c[2])),
            Measurement(family, "ocr_word_f1", 2 * hit / (said + truth_words) if said + truth_words else None,
                        per(words, lambda c: 2 * c[0], lambda c: c[1] + c[2])),
            Measurement(family, "region_caption_word_f1",
                        _ratio(sum(2 * c[0] for c in captions.values()), sum(c[1] + c[2] for c in captions.values())),
                        per(captions, lambda c: 2 * c[0], lambda c: c[1] + c[2])),
            Measurement(family, "region_caption_object", _ratio(sum(c[3] for c in captions.values()),
                                                                sum(c[4] for c in captions.values())),
                        per(captions, lambda c: c[3], lambda c: c[4])),
            Measurement(family, "region_caption_text", _ratio(sum(c[5] for c in captions.values()),
                                                              sum(c[6] for c in captions.values())),
                        per(captions, lambda c: c[5], lambda c: c[6])),
        ]

    def _region_captions(self, regions: pa.Table) -> dict[str, tuple[int, int, int, int, int, int, int]]:
        """Per image with predicted or gold region captions: (words shared by box-matched pairs,
        predicted words, gold words, matched pairs whose caption names the gold caption's object,
        matched pairs, matched pairs whose quoted words are all the gold caption's, matched pairs
        whose caption quotes text)."""
        pred, gt = self._kind(regions, "region_caption"), self._kind(self.truth["regions"], "region_caption")
        out = {}
        for image in self.images:
            p, g = pred.get(image, []), gt.get(image, [])
            if not p and not g:
                continue
            words = [Counter(tokens(r["label"] or "")) for r in p], [Counter(tokens(r["label"] or "")) for r in g]
            matches = match_boxes(p, g, self.config.iou, False)
            shared = sum(sum((words[0][i] & words[1][j]).values()) for i, j, _ in matches)
            named = sum(1 for i, j, _ in matches
                        if (wanted := self._mentioned(g[j]["label"] or "")) and wanted <= self._mentioned(p[i]["label"] or ""))
            said = [(quoted(p[i]["label"] or ""), quoted(g[j]["label"] or "")) for i, j, _ in matches]
            said = [(q, truth) for q, truth in said if q]
            out[image] = (shared, sum(sum(w.values()) for w in words[0]), sum(sum(w.values()) for w in words[1]),
                          named, len(matches), sum(q <= truth for q, truth in said), len(said))
        return out

    def _mentioned(self, text: str) -> set[str]:
        words = set(tokens(text))
        return {c for c in self.config.categories if c in words or plural(c) in words}

    def _texts(self, texts: pa.Table):
        out = []
        truth_objects = {img: {r["label"] for r in rows} for img, rows in self._kind(self.truth["regions"], "object").items()}
        truth_words = {img: words_of(r["label"] for r in rows) for img, rows in self._kind(self.truth["regions"], "ocr").items()}
        for granularity in GRANULARITIES:
            gt = rows_by_image(self.truth["texts"].filter(pc.equal(self.truth["texts"].column("granularity"), granularity)))
            pred = rows_by_image(texts.filter(pc.equal(texts.column("granularity"), granularity)))
            scored = [i for i in self.images if i in pred and i in gt]
            family, name = "text", granularity
            coverage = len(scored) / len(self.images) if self.images else None
            covered = Units.of({i: (float(i in pred and i in gt), 1.0) for i in self.images})
            if not scored:
                out += [Measurement(family, f"{name}.{m}", None)
                        for m in ("bleu4", "cider", "rouge_l", "object_recall", "hallucination", "distinct", "quoted_text")]
                out.append(Measurement(family, f"{name}.coverage", coverage, covered))
                continue
            best = {i: max(pred[i], key=lambda r: r["score"] if r["score"] is not None else 0.0)["text"] for i in scored}
            res = {i: [" ".join(tokens(best[i]))] for i in scored}
            refs = {i: [" ".join(tokens(r["text"])) for r in gt[i]] for i in scored}
            bleu = Bleu(4).compute_score(refs, res, verbose=0)[0][3]
            cider, cider_each = Cider().compute_score(refs, res)
            rouge, rouge_each = Rouge().compute_score(refs, res)
            order = list(refs)  # pycocoevalcap scores images in the order of the references' keys
            recall, hallucination, read = {}, {}, {}
            for i in scored:
                if said := quoted(best[i]):  # text it says the image shows: is it there?
                    read[i] = (float(said <= truth_words.get(i, set())), 1.0)
                mentioned, present = self._mentioned(best[i]), truth_objects.get(i, set())
                if present:
                    recall[i] = (len(mentioned & present) / len(present), 1.0)
                if mentioned:
                    hallucination[i] = (len(mentioned - present) / len(mentioned), 1.0)
            mean = lambda d: float(np.mean([v[0] for v in d.values()])) if d else None  # noqa: E731
            out += [
                Measurement(family, f"{name}.bleu4", float(bleu)),
                Measurement(family, f"{name}.cider", float(cider),
                            Units.of({i: (float(c), 1.0) for i, c in zip(order, cider_each)})),
                Measurement(family, f"{name}.rouge_l", float(rouge),
                            Units.of({i: (float(r), 1.0) for i, r in zip(order, rouge_each)})),
                Measurement(family, f"{name}.coverage", coverage, covered),
                Measurement(family, f"{name}.object_recall", mean(recall), Units.of(recall)),
                Measurement(family, f"{name}.hallucination", mean(hallucination) or 0.0, Units.of(hallucination)),
                Measurement(family, f"{name}.distinct", len({" ".join(tokens(t)) for t in best.values()}) / len(best)),
                Measurement(family, f"{name}.quoted_text", mean(read), Units.of(read)),
            ]
        return out

    def _grounding(self, triplets: pa.Table, grounded: pa.Table | None) -> list[Measurement]:
        return [self._recall_at_one(grounded, "grounding_recall@1") if grounded is not None
                else Measurement("text-phrase-region", "grounding_recall@1", None),
                self._recall_at_one(triplets, "triplet_recall"), self._triplet_precision(triplets)]

    def _recall_at_one(self, triplets: pa.Table, metric: str) -> Measurement:
        """Of the truth's (image, phrase) pairs, the share whose best-scored triplet of that phrase
        boxes one of the phrase's boxes."""
        gt_groups: dict[tuple[str, str], list] = defaultdict(list)
        for row in self.truth["triplets"].to_pylist():
            gt_groups[(row["image_id"], normalise_phrase(row["phrase"]))].append(row["box"])
        best: dict[tuple[str, str], dict] = {}
        for row in triplets.to_pylist():
            key = (row["image_id"], normalise_phrase(row["phrase"]))
            score = row["score"] if row["score"] is not None else 0.0
            if key not in best or score > (best[key]["score"] or 0.0):
                best[key] = row
        hits = 0
        per_image = {i: [0.0, 0.0] for i in self.images}
        for key, boxes in gt_groups.items():
            hit = key in best and box_iou(np.array([best[key]["box"]]), np.array(boxes)).max() >= self.config.iou
            hits += int(hit)
            counted = per_image.setdefault(key[0], [0.0, 0.0])
            counted[0], counted[1] = counted[0] + hit, counted[1] + 1
        recall = hits / len(gt_groups) if gt_groups else None
        return Measurement("text-phrase-region", metric, recall,
                           Units.of({i: (a, b) for i, (a, b) in per_image.items()}))

    def _triplet_precision(self, triplets: pa.Table) -> Measurement:
        objects = self._kind(self.truth["regions"], "object")
        per_image = {i: [0.0, 0.0] for i in self.images}
        for row in triplets.to_pylist():
            named = self._mentioned(row["phrase"] or "")
            if row["image_id"] not in per_image or not named or row["box"] is None:
                continue  # not a gold image, or a phrase that names no category: nothing to judge
            boxes = [r["box"] for r in objects.get(row["image_id"], []) if r["label"] in named]
            right = bool(boxes) and box_iou(np.array([row["box"]]), np.array(boxes)).max() >= self.config.iou
            counted = per_image[row["image_id"]]
            counted[0], counted[1] = counted[0] + right, counted[1] + 1
        judged = sum(b for _, b in per_image.values())
        return Measurement("text-phrase-region", "triplet_precision",
                           sum(a for a, _ in per_image.values()) / judged if judged else None,
                           Units.of({i: (a, b) for i, (a, b) in per_image.items()}))


def metric_rows(results: list[Measurement], round_id: int, source: str, split: str = "gold") -> pa.Table:
    """``metrics`` rows: the value, its interval (when it has one) and its per-image units."""
    rows = []
    for m in results:
        found = m.interval()
        units = m.units if m.value is not None else None
        rows.append({"round": round_id, "split": split, "family": m.family, "metric": m.metric,
                     "value": None if m.value is None else float(m.value), "source": source,
                     "low": found.low if found else None, "high": found.high if found else None,
                     "images": units.measured if units else None,
                     "unit_images": list(units.images) if units else None,
                     "unit_num": units.num.tolist() if units else None,
                     "unit_den": units.den.tolist() if units else None})
    return pa.Table.from_pylist(rows, schema=schema_for("metrics"))
