"""Is a region caption a second opinion on its box? Round R's YOLO at a low floor on the gold
images, the round's Florence-2 captioning every candidate box on its crop, then three questions:

1. on kept boxes (at the round's floor) that hold a gold object: who names it right when the
   YOLO label and the caption's subject disagree (``filters.captions`` drops such captions);
2. detection F1 when a caption that names the box's label may lower the box's threshold and one
   that names another category may raise it, each rule's thresholds chosen on half of the gold
   images and scored on the other half (2-fold, 3 random splits), against one threshold chosen
   the same way;
3. detection F1 when a box takes the category its caption names (relabelling) under a score.

    python bench/caption_agreement.py --data fld-data/dataset --world fld-data/world --round 1
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from bench.common import report  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.evaluation.round_quality import round_config  # noqa: E402
from filters.captions import subject_names, subjects  # noqa: E402
from filters.phrases import PhraseParser  # noqa: E402
from schemas.geometry import box_iou, match_boxes, rows_by_image  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.florence2 import REGION_TO_DESCRIPTION, Florence2Config, Florence2Specialist  # noqa: E402
from specialists.yolo import YoloConfig, YoloDetector  # noqa: E402

GRID = tuple(np.round(np.arange(0.05, 0.9, 0.025), 3))


def candidates(data: Path, world: Path, round_id: int, low: float) -> tuple[list[dict], dict, float]:
    """(YOLO's boxes at ``low`` with each one's caption and the categories it names, gold objects by
    image, the round's YOLO floor)."""
    config = round_config(Store(data), round_id)
    yolo = next(s for s in config.specialists if s.name == "yolo")
    f2 = next(s for s in config.specialists if s.name == "florence2" and REGION_TO_DESCRIPTION in s.options.get("tasks", []))
    gold = Store(world / "gold")
    images = gold.read("images")
    uris = dict(zip(images.column("image_id").to_pylist(), images.column("uri").to_pylist()))
    ids = sorted(uris)
    pixels = {i: load_rgb(uris[i]) for i in ids}
    detector = YoloDetector(YoloConfig(**{**yolo.options, "conf": low}))
    captioner = Florence2Specialist(Florence2Config(**{k: tuple(v) if isinstance(v, list) else v
                                                       for k, v in f2.options.items()}))
    captioner.load()
    boxes, captions = [], []
    for s in range(0, len(ids), 16):
        chunk = ids[s : s + 16]
        found = detector(Batch(chunk, [pixels[i] for i in chunk]))["regions"]
        boxes.append(found)
        captions.append(captioner(Batch(chunk, [pixels[i] for i in chunk], regions=found))["regions"])
    said = {r["region_id"].removesuffix("-f2cap"): r["label"] for r in pa.concat_tables(captions).to_pylist()}
    rows = pa.concat_tables(boxes).select(["image_id", "region_id", "box", "label", "score"]).to_pylist()
    vocabulary = sorted({r["label"] for r in rows})
    for r in rows:
        r["caption"] = said.get(r["region_id"], "")
    for r, subject in zip(rows, subjects([r["caption"] for r in rows], PhraseParser())):
        r["named"] = {c for c in vocabulary if subject and subject_names(*subject, c)}  # what the caption is about
    truth = gold.read("regions")
    return rows, rows_by_image(truth.filter(pc.equal(truth.column("kind"), "object"))), float(yolo.options["conf"])


def f1(by_image: dict, truth: dict, images, keep, label=lambda r: r["label"]) -> float:
    tp = n = m = 0
    for i in images:
        kept = [{**r, "label": label(r)} for r in by_image.get(i, []) if keep(r)]
        n, m = n + len(kept), m + len(truth.get(i, []))
        tp += len(match_boxes(kept, truth.get(i, []), 0.5))
    return 2 * tp / (n + m) if n + m else 0.0


def rules() -> dict[str, list[tuple[tuple, object]]]:
    agree = lambda r: r["label"] in r["named"]  # noqa: E731
    other = lambda r: bool(r["named"] - {r["label"]}) and not agree(r)  # noqa: E731
    return {
        "one threshold": [((t,), lambda r, t=t: r["score"] >= t) for t in GRID],
        "threshold by agreement": [((a, d), lambda r, a=a, d=d: r["score"] >= (a if agree(r) else d))
                                   for a in GRID for d in GRID if d >= a],
        "agree / silent / other": [((a, n, o), lambda r, a=a, n=n, o=o: r["score"] >= (a if agree(r) else o if other(r) else n))
                                   for a in GRID[::2] for n in GRID[::2] for o in GRID[::2] if n >= a and o >= a],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("fld-data/dataset"))
    parser.add_argument("--world", type=Path, default=Path("fld-data/world"))
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--low", type=float, default=0.05, help="YOLO's floor for the candidate boxes")
    args = parser.parse_args()
    rows, truth, floor = candidates(args.data, args.world, args.round, args.low)
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r["image_id"], []).append(r)
    images = sorted(truth)
    # 1. who is right where they disagree
    who: Counter = Counter()
    for i in images:
        gt = truth[i]
        for r in (r for r in by_image.get(i, []) if r["score"] >= floor):
            iou = box_iou(np.array([r["box"]]), np.array([g["box"] for g in gt]))[0]
            if not len(iou) or iou.max() < 0.5 or r["label"] in r["named"] or not r["named"]:
                continue
            true = gt[int(iou.argmax())]["label"]
            who[("YOLO" if r["label"] == true else "-") + " / " + ("caption" if true in r["named"] else "-")] += 1
    out = [{"question": "disagreeing on a gold object: right (YOLO / caption)", "rule": k, "value": float(v)}
           for k, v in sorted(who.items())]
    # 2. thresholds chosen on one half, scored on the other
    rng = np.random.default_rng(0)
    for name, family in rules().items():
        scores = []
        for _ in range(3):
            order = list(rng.permutation(images))
            halves = order[: len(order) // 2], order[len(order) // 2 :]
            for fit, score in (halves, halves[::-1]):
                _, keep = max(family, key=lambda kv: f1(by_image, truth, fit, kv[1]))
                scores.append(f1(by_image, truth, score, keep))
        out.append({"question": "detection F1, 2-fold x 3 (mean)", "rule": name, "value": round(float(np.mean(scores)), 4)})
    # 3. relabelling by the caption under a score
    for under in (0.0, 0.4, 0.6, 1.01):
        relabel = lambda r, u=under: next(iter(r["named"])) if len(r["named"]) == 1 and r["score"] < u else r["label"]  # noqa: E731
        out.append({"question": f"detection F1 at the floor {floor}, relabelled by the caption under a score",
                    "rule": f"under {under}", "value": round(f1(by_image, truth, images, lambda r: r["score"] >= floor, relabel), 4)})
    report("caption_agreement", out, {"data": str(args.data), "round": args.round, "candidates": len(rows), "floor": floor})


if __name__ == "__main__":
    main()
