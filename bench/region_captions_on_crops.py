"""Region captions of a finished round's gold object boxes by a Florence-2, as a round serves them:
on the whole image with the box's location tokens (``full``), or on square crops of each box
(``cropM``: the box's longer side plus M of it on each side, ``Florence2Config.region_margin``;
``cropM@S``: fed at S pixels, its ``region_size``);
and, for comparison, the crop's brief ``<CAPTION>`` (``capM``). Scored as a round's region
captions are, with 95% intervals and the paired change from the first mode. FLD-5B's region
captions are a captioner run on crops; a model trained with ``crop_regions`` is served on them.

    python bench/region_captions_on_crops.py --data fld-data --world fld-data/world \
        --checkpoint zoo/florence2/checkpoint --modes full crop0 crop0.2 cap0.2
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from bench.common import report  # noqa: E402
from engine.dataset.sources import load_rgb  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.evaluation.evaluate import Evaluator  # noqa: E402
from engine.evaluation.noise import change_interval, interval  # noqa: E402
from specialists.base import Batch  # noqa: E402
from specialists.florence2 import REGION_TO_DESCRIPTION, Florence2Config, Florence2Specialist, region_crop  # noqa: E402
from specialists.florence2_parse import parse_florence2  # noqa: E402

MODE = re.compile(r"^(full|crop|cap)([0-9.]*)(?:@([0-9]+))?$")
METRICS = ("region_caption_word_f1", "region_caption_object")


def captions(checkpoint: str, mode: str, regions: pa.Table, images: dict[str, np.ndarray]) -> dict[str, str]:
    """Region id -> caption of each object region ``mode`` describes."""
    kind, margin, size = MODE.match(mode).groups()
    margin, size = float(margin or 0), int(size) if size else None
    if kind == "cap":  # the crop's brief description
        f2 = Florence2Specialist(Florence2Config(checkpoint, tasks=("<CAPTION>",), batch_size=16))
        f2.load()
        rows = regions.select(["region_id", "image_id", "box"]).to_pylist()
        crops = [region_crop(images[r["image_id"]], r["box"], margin)[0] for r in rows]
        generated = f2.generate(crops, ["<CAPTION>"] * len(crops))
        return {r["region_id"]: items[0].text for r, g in zip(rows, generated) if (items := parse_florence2(g, "<CAPTION>", (1, 1)))}
    f2 = Florence2Specialist(Florence2Config(checkpoint, tasks=(REGION_TO_DESCRIPTION,), batch_size=16,
                                             region_margin=None if kind == "full" else margin,
                                             region_size=size if kind == "crop" else None))
    f2.load()
    ids = list(images)
    made = f2(Batch(ids, [images[i] for i in ids], regions=regions))["regions"]
    return {r["region_id"].removesuffix("-f2cap"): r["label"] for r in made.select(["region_id", "label"]).to_pylist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("fld-data"))
    parser.add_argument("--world", type=Path, default=None, help="The world whose gold/ scores (default: DATA/world).")
    parser.add_argument("--checkpoint", default="zoo/florence2/checkpoint")
    parser.add_argument("--round", type=int, default=1, help="The round whose gold object boxes are described.")
    parser.add_argument("--modes", nargs="+", default=["full", "crop0", "crop0.2", "cap0.2"])
    args = parser.parse_args()
    if bad := [m for m in args.modes if not MODE.match(m)]:
        raise SystemExit(f"unknown mode(s) {bad}: full, cropM[@S] or capM (M a margin, S a side: crop0.2@112)")
    gold = Store(((args.world or args.data / "world") / "gold"))
    uris = dict(zip(*(gold.read("images").column(c).to_pylist() for c in ("image_id", "uri"))))
    regions = Store(args.data).read("regions")
    regions = regions.filter(pc.and_(pc.and_(pc.equal(regions.column("round"), args.round),
                                             pc.equal(regions.column("kind"), "object")),
                                     pc.is_in(regions.column("image_id"), pa.array(sorted(uris)))))
    if not regions.num_rows:
        raise SystemExit(f"round {args.round} of {args.data} holds no object regions of the gold images in {gold.root}")
    images = {i: load_rgb(uris[i]) for i in sorted(set(regions.column("image_id").to_pylist()))}
    evaluator, first, out = Evaluator(gold), None, []
    for mode in args.modes:
        start = time.perf_counter()
        made = captions(str(args.checkpoint), mode, regions, images)
        table = pa.Table.from_pylist([{**r, "kind": "region_caption", "label": made[r["region_id"]]}
                                      for r in regions.to_pylist() if made.get(r["region_id"])], schema=regions.schema)
        found = {m.metric: m for m in evaluator.evaluate({"regions": table}) if m.metric in METRICS}
        first = first or found
        row = {"mode": mode, "seconds": round(time.perf_counter() - start, 1), "captions": table.num_rows}
        for metric, m in found.items():
            low_high, change = interval(m.units), change_interval(first[metric].units, m.units)
            row[metric] = round(m.value, 3) if m.value is not None else None
            row[f"{metric} 95%"] = f"[{low_high.low:.3f}, {low_high.high:.3f}]" if low_high else "-"
            row[f"{metric} change"] = (f"{m.value - first[metric].value:+.3f} [{change.low:+.3f}, {change.high:+.3f}]"
                                       if change else "-")
        out.append(row)
    report("region_captions_on_crops", out, {"data": str(args.data), "round": args.round, "boxes": regions.num_rows,
                                             "checkpoint": str(args.checkpoint)})


if __name__ == "__main__":
    main()
