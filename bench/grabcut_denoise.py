"""GrabCut with and without its denoising filter on a finished round's own gold boxes: the round's
object regions of the gold images are masked again by ``GrabCutSegmenter`` with each filter
diameter, and scored as the round is (mask IoU over the masks made, mask coverage: the share of
matched objects given a mask), with 95% intervals and the paired change from the first setting.

    python bench/grabcut_denoise.py --data fld-data --world fld-data/world --round 1 --denoise 0 9
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from bench.common import report  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.evaluation.evaluate import Evaluator  # noqa: E402
from engine.evaluation.noise import change_interval, interval  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.sam import GrabCutConfig, GrabCutSegmenter  # noqa: E402

BATCH = 8


def remasked(regions: pa.Table, ids: list[str], images: list, denoise: int) -> tuple[pa.Table, float]:
    """``regions`` with every object's mask made again by GrabCut at ``denoise``, and the seconds it took."""
    segmenter = GrabCutSegmenter(GrabCutConfig(denoise=denoise))
    segmenter.load()
    masks, start = {}, time.perf_counter()
    for k in range(0, len(ids), BATCH):
        part = regions.filter(pc.is_in(regions.column("image_id"), pa.array(ids[k:k + BATCH])))
        for row in segmenter(Batch(ids[k:k + BATCH], images[k:k + BATCH], regions=part))["masks"].to_pylist():
            masks[row["region_id"]] = row["mask"]
    rows = [{**r, "mask": masks.get(r["region_id"])} if r["kind"] == "object" else r for r in regions.to_pylist()]
    return pa.Table.from_pylist(rows, schema=regions.schema), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("fld-data"))
    parser.add_argument("--world", type=Path, default=None, help="The world whose gold/ scores (default: DATA/world).")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--denoise", type=int, nargs="+", default=[0, GrabCutConfig.denoise])
    args = parser.parse_args()
    gold = Store(((args.world or args.data / "world") / "gold"))
    uris = dict(zip(*(gold.read("images").column(c).to_pylist() for c in ("image_id", "uri"))))
    regions = Store(args.data).read("regions")
    regions = regions.filter(pc.and_(pc.equal(regions.column("round"), args.round),
                                     pc.is_in(regions.column("image_id"), pa.array(sorted(uris)))))
    if not regions.num_rows:
        raise SystemExit(f"round {args.round} of {args.data} holds no regions of the gold images in {gold.root}")
    ids = sorted(set(regions.column("image_id").to_pylist()))
    images = [load_rgb(uris[i]) for i in ids]
    evaluator, rows, first = Evaluator(gold), [], None
    for d in args.denoise:
        table, seconds = remasked(regions, ids, images, d)
        found = {m.metric: m for m in evaluator.evaluate({"regions": table}) if m.metric in ("mask_iou", "mask_coverage")}
        first = first or found
        row = {"denoise": d, "seconds": round(seconds, 1)}
        for metric, m in found.items():
            low_high = interval(m.units)
            change = change_interval(first[metric].units, m.units)
            row[metric] = m.value
            row[f"{metric} 95%"] = f"[{low_high.low:.3f}, {low_high.high:.3f}]" if low_high else "-"
            row[f"{metric} change"] = (f"{m.value - first[metric].value:+.3f} [{change.low:+.3f}, {change.high:+.3f}]"
                                       if change else "-")
        rows.append(row)
    report("grabcut_denoise", rows, {"data": str(args.data), "round": args.round, "images": len(ids)})


if __name__ == "__main__":
    main()
