"""The review queue: a round's images ranked by how much the round's own evidence disagrees, so
that scarce human time goes where the machines are least sure.

Signals, each read from what the round wrote (no model is run again):
- ``near_floor``: a kept box scored just above its confidence floor (the closer, the more);
- ``label_clash``: two kept boxes of different labels on the same object (IoU >= ``clash_iou``),
  a detector that could not decide, or two specialists that disagree;
- ``fused_disagree``: a fusion cluster whose members gave different labels;
- ``unconfirmed``: a box only one of the round's several specialists of its kind proposed;
- ``caption_vs_boxes``: a description names a category no kept box of the image has
  (the captioner against the detector);
- ``region_caption_vs_label``: a region caption on a box that does not name the box's label
  (Florence-2 against the detector);
- ``quote_vs_text``: a description quotes text ("a sign that says FARM") none of whose words the
  OCR read in the image (the captioner against the reader: the round keeps such descriptions).

Only images of the pool and of unlabelled sources are ranked (never gold), and images a person
already reviewed are left out. Each entry says why it was ranked, with the regions behind it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchvision.ops import box_iou

from engine.dataset.store import Store, StoreError
from filters.captions import quoted, words_of
from filters.regions import RegionFilterConfig, floor_of
from schemas.hashing import fingerprint

REVIEWABLE_SPLITS = ("pool", "unlabelled")
WEIGHTS = {"near_floor": 1.0, "label_clash": 2.0, "fused_disagree": 2.0, "unconfirmed": 1.0,
           "caption_vs_boxes": 1.5, "region_caption_vs_label": 0.5, "quote_vs_text": 1.0}


@dataclass(frozen=True)
class QueueConfig:
    margin: float = 0.15
    """A kept box within this of its floor is a close call (weight falls linearly to 0 at the margin)."""
    clash_iou: float = 0.6
    weights: dict[str, float] = field(default_factory=lambda: dict(WEIGHTS))

    def __post_init__(self) -> None:
        if not 0.0 < self.margin <= 1.0:
            raise ValueError(f"margin must be within (0, 1], got {self.margin}")
        if not 0.0 < self.clash_iou <= 1.0:
            raise ValueError(f"clash_iou must be within (0, 1], got {self.clash_iou}")
        unknown = set(self.weights) - set(WEIGHTS)
        if unknown:
            raise ValueError(f"unknown signal(s) {sorted(unknown)}; signals: {', '.join(WEIGHTS)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("signal weights must be >= 0")


@dataclass
class Reason:
    """One signal on one image: how often it fired, its weighted share of the score, examples."""

    signal: str
    count: int = 0
    score: float = 0.0
    regions: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, weight: float, region: str | None = None, detail: str | None = None) -> None:
        self.count += 1
        self.score += weight
        if region and len(self.regions) < 10:
            self.regions.append(region)
        if detail and len(self.details) < 3:
            self.details.append(detail)

    def text(self) -> str:
        more = f" ({'; '.join(self.details)})" if self.details else ""
        return f"{self.count} {self.signal.replace('_', ' ')}{more}"


@dataclass
class QueueEntry:
    """One image's place in the queue and why."""

    image_id: str
    score: float
    reasons: list[Reason]
    rank: int = 0

    @property
    def why(self) -> str:
        return "; ".join(r.text() for r in self.reasons) or "no disagreement found"

    def to_dict(self) -> dict:
        return {"rank": self.rank, "image_id": self.image_id, "score": round(self.score, 4), "why": self.why,
                "reasons": [{"signal": r.signal, "count": r.count, "score": round(r.score, 4), "regions": r.regions,
                             "details": r.details} for r in self.reasons]}


def floors(store: Store, round_id: int) -> RegionFilterConfig:
    """The round's confidence floors (default, per specialist and per kind), from the config it recorded."""
    rows = store.read("rounds", round_id).to_pylist()
    if not rows:
        raise StoreError(f"round {round_id} does not exist in {store.root}: see `fld rounds`")
    config = json.loads(rows[-1]["config"])
    regions = config.get("filters", {}).get("regions", {})
    return RegionFilterConfig(min_score=float(regions.get("min_score", 0.0)),
                              min_score_by_specialist={k: float(v) for k, v in regions.get("min_score_by_specialist", {}).items()})


def latest_annotation_round(store: Store) -> int | None:
    """The latest completed round the machines made (review rounds are people's)."""
    rounds = [r["round"] for r in store.read("rounds", columns=["round", "kind", "status"]).to_pylist()
              if r["status"] == "completed" and r["kind"] != "review"]
    return max(rounds, default=None)


def reviewed_images(store: Store) -> set[str]:
    return set(store.read("reviews", columns=["image_id"]).column("image_id").to_pylist())


def candidates(store: Store) -> list[str]:
    """Readable images a person may review (pool and unlabelled; never gold or seed)."""
    images = store.read("images", 0, columns=["image_id", "split", "status"])
    ok = pc.and_(pc.is_in(images.column("split"), pa.array(REVIEWABLE_SPLITS)), pc.equal(images.column("status"), "ok"))
    return sorted(set(images.filter(ok).column("image_id").to_pylist()))


def _words(labels: set[str]) -> dict[str, re.Pattern]:
    return {label: re.compile(rf"\b{re.escape(label)}s?\b", re.IGNORECASE) for label in labels if label}


def build_queue(store: Store, round_id: int, config: QueueConfig = QueueConfig()) -> list[QueueEntry]:
    """Every reviewable image of round ``round_id`` ranked, most disagreement first (ties by a hash
    of the image id, so the order is stable and not the ingestion order)."""
    recorded = floors(store, round_id)
    ids = set(candidates(store)) - reviewed_images(store)
    reasons: dict[str, dict[str, Reason]] = defaultdict(dict)
    weight = config.weights

    def hit(image: str, signal: str, amount: float = 1.0, region: str | None = None, detail: str | None = None) -> None:
        if weight.get(signal, 0.0) > 0:
            reasons[image].setdefault(signal, Reason(signal)).add(weight[signal] * amount, region, detail)

    regions = store.read("regions", round_id, columns=["image_id", "region_id", "kind", "box", "label", "members",
                                                       "specialist", "score", "score_source"])
    regions = regions.filter(pc.is_in(regions.column("image_id"), pa.array(sorted(ids), pa.string())))
    rows = regions.to_pylist()
    boxes = np.asarray(regions.column("box").to_pylist(), np.float32).reshape(-1, 4)
    kind_makers: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        for m in r["members"] or []:
            kind_makers[r["kind"]].add(m["specialist"])
        if r["specialist"] != "fusion":
            kind_makers[r["kind"]].add(r["specialist"])
    by_image: dict[str, list[int]] = defaultdict(list)
    for k, r in enumerate(rows):
        by_image[r["image_id"]].append(k)
    labels = {r["label"] for r in rows if r["kind"] == "object" and r["label"]}
    patterns = _words(labels)
    for image, ks in by_image.items():
        objects = [k for k in ks if rows[k]["kind"] == "object"]
        for k in ks:
            r = rows[k]
            if r["score_source"] == "human" or r["kind"] not in ("object", "ocr"):
                continue
            scored = [(m["specialist"], m["score"]) for m in r["members"] or []] or [(r["specialist"], r["score"])]
            for specialist, score in scored:
                floor = floor_of(recorded, specialist, r["kind"])
                if score is not None and floor <= score < floor + config.margin:
                    hit(image, "near_floor", 1.0 - (score - floor) / config.margin, r["region_id"],
                        f"{r['label'] if r['kind'] == 'object' else 'text'} {score:.2f} over floor {floor:.2f}")
            if r["members"] and len({m["label"] for m in r["members"]}) > 1:
                hit(image, "fused_disagree", 1.0, r["region_id"],
                    " vs ".join(f"{m['specialist']}={m['label']}" for m in r["members"]))
            if r["specialist"] != "fusion" and len(kind_makers[r["kind"]]) > 1:
                hit(image, "unconfirmed", 1.0, r["region_id"], f"only {r['specialist']}")
        if len(objects) > 1:
            iou = box_iou(torch.from_numpy(boxes[objects]), torch.from_numpy(boxes[objects])).numpy()
            for a, b in zip(*np.nonzero(np.triu(iou, 1) >= config.clash_iou)):
                ra, rb = rows[objects[a]], rows[objects[b]]
                if ra["label"] != rb["label"]:
                    hit(image, "label_clash", 1.0, ra["region_id"], f"{ra['label']} / {rb['label']}")
        captions = [k for k in ks if rows[k]["kind"] == "region_caption"]
        if captions and objects:
            iou = box_iou(torch.from_numpy(boxes[captions]), torch.from_numpy(boxes[objects])).numpy()
            for c, k in enumerate(captions):
                best = int(iou[c].argmax())
                label = rows[objects[best]]["label"]
                if iou[c, best] >= 0.9 and label and not patterns[label].search(rows[k]["label"] or ""):
                    hit(image, "region_caption_vs_label", 1.0, rows[k]["region_id"],
                        f"'{(rows[k]['label'] or '')[:40]}' on a {label}")
    _caption_signal(store, round_id, ids, rows, by_image, patterns, hit)
    entries = [QueueEntry(image, sum(r.score for r in found.values()),
                          sorted(found.values(), key=lambda r: -r.score)) for image, found in reasons.items()]
    entries += [QueueEntry(image, 0.0, []) for image in ids - set(reasons)]
    entries.sort(key=lambda e: (-e.score, fingerprint(e.image_id)))
    for rank, entry in enumerate(entries, 1):
        entry.rank = rank
    return entries


def _caption_signal(store: Store, round_id: int, ids: set[str], rows: list[dict], by_image: dict[str, list[int]],
                    patterns: dict[str, re.Pattern], hit) -> None:
    """Descriptions that name a category no kept box of their image has, or quote text the OCR
    did not read there."""
    texts = store.read("texts", round_id, columns=["image_id", "text_id", "granularity", "text", "score_source"])
    texts = texts.filter(pc.is_in(texts.column("image_id"), pa.array(sorted(ids), pa.string())))
    for t in texts.to_pylist():
        if t["score_source"] == "human":
            continue
        kept = [rows[k] for k in by_image.get(t["image_id"], [])]
        present = {r["label"] for r in kept if r["kind"] == "object"}
        for label, pattern in patterns.items():
            if label not in present and pattern.search(t["text"]):
                hit(t["image_id"], "caption_vs_boxes", 1.0, t["text_id"], f"{t['granularity']} names a {label}, no box")
        read = words_of(r["label"] for r in kept if r["kind"] == "ocr")
        if read and (said := quoted(t["text"])) and not said & read:
            hit(t["image_id"], "quote_vs_text", 1.0, t["text_id"],
                f"{t['granularity']} quotes {' '.join(sorted(said))}, the OCR reads {' '.join(sorted(read))[:60]}")


def random_queue(store: Store, seed: int) -> list[QueueEntry]:
    """The reviewable images in a random order (the baseline the ranking has to beat)."""
    ids = sorted(set(candidates(store)) - reviewed_images(store))
    order = np.random.default_rng(seed).permutation(len(ids))
    return [QueueEntry(ids[i], 0.0, [], rank) for rank, i in enumerate(order, 1)]
