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
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from engine import settings  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.evaluation.evaluate import Evaluator  # noqa: E402
from engine.loop.profiles import profile  # noqa: E402
from engine.world.make import make_world  # noqa: E402
from filters.text import ocr_text  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.registry import build  # noqa: E402

DETECTOR = {"min 736 (rapidocr's default)": (736, "min"), "max 960 (PaddleOCR's)": (960, "max")}
FLOORS = (0.3, 0.5, 0.7, 0.8, 0.9)


def measure(store: Store, split: str, images: int) -> list[dict]:
    """Each detector setting and floor on the first ``images`` of ``split``, scored by the round's
    own evaluator (``ocr_word_*``)."""
    listed = [r for r in store.read("images").to_pylist() if r["split"] == split][:images]
    ids = [r["image_id"] for r in listed]
    pixels = {r["image_id"]: load_rgb(r["uri"]) for r in listed}
    evaluator = Evaluator(store, images=ids)
    rows = []
    for name, (side, kind) in DETECTOR.items():
        reader = build("rapidocr", min_score=0.0, threads=1, det_limit_side_len=side, det_limit_type=kind)
        reader.load()
        start = time.perf_counter()
        reads = pa.concat_tables([reader(Batch(ids[s : s + 16], [pixels[i] for i in ids[s : s + 16]]))["regions"]
                                  for s in range(0, len(ids), 16)])
        seconds = (time.perf_counter() - start) / len(ids)
        reads = reads.filter(ocr_text(reads).keep)
        for floor in FLOORS:
            kept = reads.filter(pc.greater_equal(reads.column("score"), floor))
            found = {m.metric: m.value for m in evaluator.evaluate({"regions": kept})}
            rows.append({"split": split, "detector": name, "s_per_image": round(seconds, 3), "floor": floor,
                         **{k: round(found[f"ocr_word_{k}"] or 0.0, 3) for k in ("precision", "recall", "f1")}})
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
