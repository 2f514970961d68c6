"""RapidOCR's settings: seconds per image (one onnxruntime thread, as a round's worker runs it)
and OCR word precision / recall / F1 after the round's own text filter (``filters.text``), per
text-detector size setting and per confidence floor, on a world's **seed split** (training-side
data: what a choice is made on) and on its **gold** split (what the round reports).

    python bench/ocr_settings.py [--images 150]

The world is the default profile's (sample seed 0, what ``make run`` annotates), drawn into a
temporary folder first (about 10 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from engine import settings  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.loop.profiles import profile  # noqa: E402
from engine.world.make import make_world  # noqa: E402
from filters.text import ocr_text  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.registry import build  # noqa: E402

DETECTOR = {"min 736 (rapidocr's default)": (736, "min"), "max 960 (PaddleOCR's)": (960, "max")}
FLOORS = (0.3, 0.5, 0.7, 0.8, 0.9)


def words(rows: list[dict]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for r in rows:
        out.setdefault(r["image_id"], Counter()).update((r["label"] or "").upper().split())
    return out


def measure(store: Store, split: str, images: int) -> list[dict]:
    listed = [r for r in store.read("images").to_pylist() if r["split"] == split][:images]
    ids = [r["image_id"] for r in listed]
    pixels = {r["image_id"]: load_rgb(r["uri"]) for r in listed}
    truth = words([r for r in store.read("regions").to_pylist() if r["kind"] == "ocr" and r["image_id"] in pixels])
    n_true = sum(sum(c.values()) for c in truth.values())
    rows = []
    for name, (side, kind) in DETECTOR.items():
        reader = build("rapidocr", min_score=0.0, threads=1, det_limit_side_len=side, det_limit_type=kind)
        reader.load()
        start = time.perf_counter()
        reads = [reader(Batch(ids[s : s + 16], [pixels[i] for i in ids[s : s + 16]]))["regions"] for s in range(0, len(ids), 16)]
        seconds = (time.perf_counter() - start) / len(ids)
        kept = [t.filter(ocr_text(t).keep).to_pylist() for t in reads]
        for floor in FLOORS:
            said = words([r for rows_ in kept for r in rows_ if r["score"] >= floor])
            hit = sum(sum((said.get(i, Counter()) & truth.get(i, Counter())).values()) for i in ids)
            n_said = sum(sum(c.values()) for c in said.values())
            rows.append({"split": split, "detector": name, "s_per_image": round(seconds, 3), "floor": floor,
                         "precision": round(hit / n_said, 3) if n_said else 0.0,
                         "recall": round(hit / n_true, 3) if n_true else 0.0,
                         "f1": round(2 * hit / (n_said + n_true), 3) if n_said + n_true else 0.0,
                         "true_words": n_true})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=150, help="images of each split (the first listed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fld-bench-ocr-") as tmp:
        world = make_world(profile("default").world(), Path(tmp) / "world")
        rows = measure(Store(world.truth), "seed", args.images) + measure(Store(world.gold), "gold", args.images)
    report("ocr_settings", rows, {"world": world.config.to_dict(), "images": args.images})


if __name__ == "__main__":
    settings.apply()
    main()
