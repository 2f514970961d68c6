"""Filter benchmarks: captions parsed per second with batched ``nlp.pipe`` against ``nlp()`` per
text; boxes per second through NMS and fusion; region precision / recall / F1 on the noise
simulator before and after filtering, against the world's gold truth.

    python bench/filters.py [--images 200] [--texts 3000] [--boxes 200000]

Goals (issue 5): batched parsing >= 3x the per-text baseline; filtering raises region F1.
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

from engine import settings  # noqa: E402
from bench.common import report  # noqa: E402
from engine.evaluation.evaluate import Evaluator  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.world.config import WorldConfig  # noqa: E402
from engine.world.make import make_world  # noqa: E402
from filters.fusion import FusionConfig, fuse  # noqa: E402
from filters.noise import NoiseConfig, simulate  # noqa: E402
from filters.phrases import PhraseParser  # noqa: E402
from filters.pipeline import FilterConfig, filter_annotations  # noqa: E402
from filters.regions import RegionFilterConfig, nms  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser_args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser_args.add_argument("--images", type=int, default=200)
    parser_args.add_argument("--texts", type=int, default=3000)
    parser_args.add_argument("--boxes", type=int, default=200_000)
    args = parser_args.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fld-bench-filters-") as tmp:
        world = make_world(WorldConfig(images=args.images, seed=11), Path(tmp) / "world")
        truth, gold = Store(world.truth), Store(world.gold)
        texts = truth.read("texts").column("text").to_pylist()
        texts = (texts * (args.texts // len(texts) + 1))[: args.texts]
        parser = PhraseParser()
        parser.parse(texts[:10])  # load the pipeline outside the timings
        one = timed(lambda: parser.parse_one_by_one(texts))
        batched = timed(lambda: parser.parse(texts))
        two = PhraseParser(processes=2)
        two.parse(texts[:10])
        both_cores = timed(lambda: two.parse(texts))
        rows.append({"measure": "parse nlp() per text", "value": round(len(texts) / one, 1), "unit": "texts/s"})
        rows.append({"measure": "parse nlp.pipe batched, 1 process", "value": round(len(texts) / batched, 1), "unit": "texts/s"})
        rows.append({"measure": "parse nlp.pipe batched, 2 processes", "value": round(len(texts) / both_cores, 1), "unit": "texts/s"})
        rows.append({"measure": "parse speed-up, 1 process (goal >= 3)", "value": round(one / batched, 2), "unit": "x"})
        rows.append({"measure": "parse speed-up, 2 processes (goal >= 3)", "value": round(one / both_cores, 2), "unit": "x"})

        sizes = gold.image_sizes()
        objects = gold.read("regions")
        objects = objects.filter(pc.equal(objects.column("kind"), "object"))
        # Realistic density: three specialists' noisy output on each image, the images repeated
        # (under new ids) until there are about --boxes boxes.
        per_round = pa.concat_tables([simulate(objects, sizes, NoiseConfig(seed=s, specialist=f"s{s}")) for s in range(3)])
        copies = max(1, args.boxes // max(per_round.num_rows, 1))
        big = pa.concat_tables([
            per_round.set_column(0, "image_id", pc.binary_join_element_wise(per_round.column("image_id"), pa.scalar(str(c)), "-"))
            .set_column(1, "region_id", pc.binary_join_element_wise(per_round.column("region_id"), pa.scalar(str(c)), "-"))
            for c in range(copies)])
        seconds = timed(lambda: nms(big, RegionFilterConfig()))
        rows.append({"measure": f"NMS ({big.num_rows:,} boxes)", "value": round(big.num_rows / seconds), "unit": "boxes/s"})
        seconds = timed(lambda: fuse(big, FusionConfig()))
        rows.append({"measure": f"fusion ({big.num_rows:,} boxes)", "value": round(big.num_rows / seconds), "unit": "boxes/s"})

        evaluator = Evaluator(gold)

        def quality(regions: pa.Table) -> dict:
            m = {x.metric: x.value for x in evaluator.evaluate({"regions": regions})}
            return {k: round(m[f"detection_{k}"], 3) for k in ("precision", "recall", "f1")}

        one_spec = simulate(objects, sizes, NoiseConfig(seed=1, specialist="a"))
        two_spec = pa.concat_tables([one_spec, simulate(objects, sizes, NoiseConfig(seed=2, specialist="b"))])
        cases = [("1 specialist", one_spec, FilterConfig()),
                 ("2 specialists, fusion", two_spec, FilterConfig()),
                 ("2 specialists, fusion, agreement >= 2", two_spec, FilterConfig(fusion=FusionConfig(min_agreement=2)))]
        for name, noisy, config in cases:
            before = quality(noisy)
            after = quality(filter_annotations({"regions": noisy}, sizes, parser, config).kept["regions"])
            for key in ("precision", "recall", "f1"):
                rows.append({"measure": f"{name}: region {key} before -> after",
                             "value": f"{before[key]:.3f} -> {after[key]:.3f}", "unit": ""})
    report("filters", rows)


if __name__ == "__main__":
    settings.apply()
    main()
