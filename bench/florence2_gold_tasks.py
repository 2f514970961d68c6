"""A Florence-2 checkpoint's whole-image tasks (three description granularities and ``<OD>``) on a
world's gold, served by ``Florence2Specialist`` and scored by the round's evaluator, with 95%
intervals: what a change to its training did to the tasks it did not aim at. Several
``--checkpoint``s or ``--beams`` widths are compared: each one's metrics, and the paired change from
the first (checkpoint, width) over the same gold images.

    python bench/florence2_gold_tasks.py --world fld-data/world --checkpoint zoo/florence2/checkpoint
    python bench/florence2_gold_tasks.py --world fld-data/world --beams 1 3 --tasks "<CAPTION>"
    python bench/florence2_gold_tasks.py --world zoo-build/world --gold seed-gold --checkpoint OLD NEW --tasks "<OD>"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from bench.zoo_florence2 import gold_batches, serve  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.evaluation.evaluate import Evaluator  # noqa: E402
from engine.evaluation.noise import change_interval, interval  # noqa: E402
from specialists.florence2 import Florence2Config, Florence2Specialist  # noqa: E402

TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>")
SHOWN = ("cider", "detection_f1", "object_recall", "hallucination", "distinct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("fld-data/world"))
    parser.add_argument("--checkpoint", nargs="+", default=["zoo/florence2/checkpoint"],
                        help="checkpoints to compare (the first is the base)")
    parser.add_argument("--gold", default="gold", help="the world's gold split to measure on (gold, seed-gold)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--beams", type=int, nargs="+", default=[1], help="beam widths to compare (the first is the base)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    gold = Store(args.world / args.gold)
    batches = gold_batches(gold, args.batch)
    rows, base, seconds = [], {}, {}
    variants = [(c, b) for c in args.checkpoint for b in args.beams]
    for checkpoint, beams in variants:
        f2 = Florence2Specialist(Florence2Config(checkpoint, tasks=tuple(args.tasks), batch_size=args.batch,
                                                 max_new_tokens=128, num_beams=beams))
        f2.load()
        started = time.monotonic()
        made = serve(f2, batches)
        seconds[f"{checkpoint} x{beams}"] = round(time.monotonic() - started, 1)
        for m in Evaluator(gold).evaluate(made):
            if m.value is None or not m.metric.endswith(SHOWN):
                continue
            low_high = interval(m.units) if m.units else None
            first = (checkpoint, beams) == variants[0]
            change = None if first else change_interval(base.get(m.key), m.units)
            rows.append({"checkpoint": checkpoint, "beams": beams, "metric": m.metric, "value": round(m.value, 3),
                         "95%": f"[{low_high.low:.3f}, {low_high.high:.3f}]" if low_high else "-",
                         "change from the first": f"[{change.low:+.3f}, {change.high:+.3f}]" if change else "-"})
            if first:
                base[m.key] = m.units
    report("florence2_gold_tasks", rows, {"world": str(args.world), "gold": args.gold, "checkpoints": args.checkpoint,
                                          "images": sum(len(b) for b in batches), "seconds": seconds})


if __name__ == "__main__":
    main()
