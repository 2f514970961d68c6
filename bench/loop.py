"""The data engine's loop, measured: per-round gold metrics of a profile, the bootstrapped
Florence-2's learning curve (gold metrics against training minutes) and training examples/s.

    python bench/loop.py --profile default            # the whole engine, then the curve
    python bench/loop.py --profile default --curve-only --steps 1200 --eval-every 100

Goals (issue 7): in the default profile, round 2 (the first refinement) beats round 1 (the
specialists' round) on at least two families' gold metrics and loses on none by more than 2
points; the bootstrapped Florence-2 reaches detection F1 >= 0.5 on gold.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import settings  # noqa: E402
from bench.common import report  # noqa: E402

HEADLINE = {"region-text/detection_f1": "object", "region-text/detection_map": "object", "region-text/mask_iou": "mask",
            "region-text/ocr_word_recall": "ocr", "text/brief.bleu4": "text", "text/brief.cider": "text",
            "text/detailed.cider": "text", "text-phrase-region/grounding_recall@1": "grounding"}


def engine_rounds(out: Path, profile: str) -> tuple[list[dict], float]:
    from engine.dataset.metrics import metrics_table
    from engine.dataset.store import Store
    from flows.engine import engine_run

    start = time.perf_counter()
    engine_run(str(out), profile)
    seconds = time.perf_counter() - start
    table = metrics_table(Store(out / "dataset"), "dataset")
    rounds = [c for c in table.columns if c.startswith("round ")]
    rows = []
    for row in table.rows:
        key = f"{row[1]}/{row[2]}"
        if key in HEADLINE:
            rows.append({"family": HEADLINE[key], "metric": key, **{c: v for c, v in zip(rounds, row[3:])}})
    return rows, seconds


def verdict(rows: list[dict]) -> dict:
    """Round 2 against round 1 per family: gains, and losses beyond 2 points."""
    if not rows or "round 2" not in rows[0]:
        return {"compared": False}
    better, worse = set(), set()
    for r in rows:
        a, b = r.get("round 1"), r.get("round 2")
        if a is None and b is not None:
            better.add(r["family"])
        elif a is not None and b is not None:
            if b > a:
                better.add(r["family"])
            if b < a - 0.02:
                worse.add(r["family"])
    return {"compared": True, "families_better": sorted(better), "families_worse_by_2pts": sorted(worse),
            "goal_met": len(better) >= 2 and not worse}


def curve(out: Path, profile: str, steps: int | None, eval_every: int) -> tuple[list[dict], dict]:
    """Train the bootstrap Florence-2 again (in its own folder) with gold checks along the way."""
    from engine.evaluation.gold import GoldGuard
    from engine.loop.profiles import budget_for
    from engine.loop.profiles import profile as get_profile
    from engine.dataset.sources import load_rgb
    from engine.evaluation.measure import measure
    from engine.loop.serving import SHARD_SIZE, round_filters, specs
    from specialists.training.florence2 import Florence2Trainer
    from engine.dataset.store import Store
    from engine.loop.training_set import load_training_set
    from engine.world.make import World
    from specialists.florence2_build import build_model, build_processor, train_tokenizer
    from specialists.training.florence2_examples import build_examples
    from specialists.training.florence2_train import Florence2TrainConfig, train_florence2

    p = get_profile(profile)
    world = World.open(out / "world")
    gold = Store(world.gold)
    seed = load_training_set(Store(world.truth), 0, ("seed",), GoldGuard.from_stores(gold))
    budget = budget_for(p.bootstrap, Florence2Trainer())
    examples = build_examples(seed.tables["texts"], seed.tables["regions"], seed.tables["triplets"], seed.sizes,
                              budget.tasks)
    corpus = seed.tables["texts"].column("text").to_pylist() + seed.tables["regions"].column("label").drop_null().to_pylist()
    tokenizer = train_tokenizer(corpus, vocab_size=2000)
    from specialists.florence2_build import SIZES

    size = SIZES[budget.size]
    processor = build_processor(tokenizer, size.image_size, size.stride)
    model = build_model(size, tokenizer)
    config = dataclasses.replace(Florence2TrainConfig(), steps=steps or budget.steps,
                                 batch_size=budget.batch, save_every=10**9, **budget.recipe)
    images = {i: load_rgb(seed.uris[i]) for i in {e.image_id for e in examples}}
    tasks = sorted({e.task for e in examples})

    def evaluate(m, step: int, minutes: float) -> dict:
        servings = Florence2Trainer().serve({"weights": "in-memory"}, tasks, "cpu")
        specialists = []
        for spec in specs(servings):  # the model in memory, served and filtered as a round would
            specialist = spec.build()
            specialist.model, specialist.processor, specialist._version = m, processor, f"step-{step}"
            specialists.append((spec.key, specialist))
        metrics = measure(specialists, gold, round_filters(servings), SHARD_SIZE)
        picked = {k: metrics.get(k) for k in HEADLINE if k in metrics}
        logging.getLogger("bench.loop").info("step %d (%.1f min): %s", step, minutes, picked)
        return picked

    result = train_florence2(model, processor, examples, images, out / "curve-state", config, fresh=True,
                             evaluate=evaluate, eval_every=eval_every)
    facts = {"examples": len(examples), "task_counts": result.tasks, "steps": result.steps,
             "train_seconds": round(result.seconds, 1), "examples_per_second": round(result.examples_per_second, 2),
             "config": config.to_dict()}
    return result.curve, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--out", type=Path, default=Path("bench/results/loop-data"))
    parser.add_argument("--curve-only", action="store_true", help="Skip the engine run (needs its world in --out).")
    parser.add_argument("--no-curve", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="Florence-2 steps for the curve (default: the profile's).")
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = (args.out / args.profile).absolute()
    extra: dict = {"profile": args.profile}
    rows: list[dict] = []
    if not args.curve_only:
        rows, seconds = engine_rounds(out, args.profile)
        extra.update({"engine_seconds": round(seconds, 1), "verdict": verdict(rows)})
    if not args.no_curve:
        points, facts = curve(out, args.profile, args.steps, args.eval_every)
        extra.update({"curve": points, "florence2_training": facts})
        report(f"loop-curve-{args.profile}", [{k: v for k, v in p.items()} for p in points] or [{"note": "no points"}])
    if rows:
        report(f"loop-{args.profile}", rows, extra)
    print(extra.get("verdict", ""), extra.get("florence2_training", ""))


if __name__ == "__main__":
    settings.apply()
    main()
