"""The data engine's loop, measured over world seeds: for each seed, round 0's quality on the seed
domain's gold and on the target domain's gold (the gap the shift makes), each round's target-gold
headline metrics with their 95% intervals, the oracle (the same models and budget trained on the
seed's and the pool's truth) and the share of the round-1-to-oracle gap each later round closed.

    python bench/loop.py --profile default --seeds 0 1 2     # writes bench/results/loop-default.json
    python bench/loop.py --profile default --curve --steps 1200 --eval-every 100   # Florence-2's curve

Goals (issue 13): the shift costs the round-0 detector at least a third of its seed-domain F1 on
target gold, and every reported change carries its interval.
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

FAMILIES = {"region-text/detection_f1": "object", "region-text/mask_iou": "mask",
            "region-text/ocr_word_recall": "ocr", "text/brief.cider": "text",
            "text-phrase-region/grounding_recall@1": "grounding"}


def _cell(cell) -> dict:
    return {"value": cell.value, "low": cell.low, "high": cell.high, "change": cell.change,
            "change_low": cell.change_low, "change_high": cell.change_high, "within_noise": cell.within_noise}


def seed_run(out: Path, profile: str, seed: int) -> dict:
    """One world seed: the whole engine, then the oracle; per headline metric, every figure."""
    from engine.dataset.metrics import headline, metric_rows
    from engine.dataset.store import Store
    from engine.evaluation.trivial import trivial_answers, trivial_measurements
    from engine.loop.bootstrap import oracle
    from engine.loop.profiles import profile as get_profile
    from engine.world.make import World
    from flows.engine import engine_run

    start = time.perf_counter()
    engine_run(str(out), profile, world_seed=seed)
    engine_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ceiling = oracle(World.open(out / "world"), out / "models", get_profile(profile))
    oracle_seconds = time.perf_counter() - start
    best: dict[str, dict] = {}
    for name, trained in ceiling.models.items():
        for key, found in trained.measured("gold").items():
            if found["value"] is not None and (key not in best or found["value"] > best[key]["value"]):
                best[key] = {**found, "model": name}
    head = headline(metric_rows(Store(out / "dataset")))
    world = World.open(out / "world")
    baseline = trivial_answers(trivial_measurements(Store(world.truth), Store(world.gold)))
    rows = []
    for metric, cells in head.rows:
        if metric not in FAMILIES:
            continue
        first = cells.get("round 1")
        top = best.get(metric)
        row = {"seed": seed, "family": FAMILIES[metric], "metric": metric,
               "round0_seed_gold": cells["round 0 (seed-gold)"].value if "round 0 (seed-gold)" in cells else None,
               "round0_gold": cells["round 0"].value if "round 0" in cells else None,
               "trivial": baseline.get(metric),
               "oracle": top["value"] if top else None, "oracle_low": top["low"] if top else None,
               "oracle_high": top["high"] if top else None,
               "rounds": {c: _cell(cell) for c, cell in cells.items() if c.startswith("round ") and "(" not in c}}
        if row["round0_seed_gold"] and row["round0_gold"] is not None:
            row["shift_cost"] = 1 - row["round0_gold"] / row["round0_seed_gold"]
        gap = (top["value"] - first.value) if top and first and first.value is not None else None
        row["gap_closed"] = {c: ((cell.value - first.value) / gap if gap and gap > 0 and cell.value is not None else None)
                             for c, cell in cells.items() if c.startswith("round ") and c not in ("round 0", "round 1")
                             and "(" not in c}
        rows.append(row)
    return {"rows": rows, "engine_seconds": round(engine_seconds, 1), "oracle_seconds": round(oracle_seconds, 1)}


def flat(rows: list[dict]) -> list[dict]:
    """One printed line per seed and family."""
    out = []
    for r in rows:
        rounds = r["rounds"]
        fmt = lambda c: "-" if c is None or c["value"] is None else (  # noqa: E731
            f"{c['value']:.3f} [{c['low']:.3f},{c['high']:.3f}]" if c["low"] is not None else f"{c['value']:.3f}")
        last = max(rounds, key=lambda c: int(c.split()[1])) if rounds else None
        change = rounds[last] if last else None
        out.append({"seed": r["seed"], "family": r["family"],
                    "r0 seed-gold": "-" if r["round0_seed_gold"] is None else f"{r['round0_seed_gold']:.3f}",
                    "r0 gold": "-" if r["round0_gold"] is None else f"{r['round0_gold']:.3f}",
                    "shift cost": "-" if r.get("shift_cost") is None else f"{r['shift_cost']:.0%}",
                    "round 1": fmt(rounds.get("round 1")), "last round": fmt(change),
                    "last change": "-" if not change or change["change"] is None else
                    f"{change['change']:+.3f}" + {True: " ~", False: " *"}.get(change["within_noise"], ""),
                    "trivial": "-" if r.get("trivial") is None else f"{r['trivial']:.3f}",
                    "oracle": "-" if r["oracle"] is None else f"{r['oracle']:.3f}",
                    "gap closed": ", ".join(f"{v:.0%}" for v in r["gap_closed"].values() if v is not None) or "-"})
    return out


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
        metrics = {m.key: m.value for m in measure(specialists, gold, round_filters(servings), SHARD_SIZE)}
        picked = {k: metrics.get(k) for k in FAMILIES if k in metrics}
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="World seeds (one engine run each).")
    parser.add_argument("--curve", action="store_true", help="Only Florence-2's learning curve (needs seed 0's world).")
    parser.add_argument("--steps", type=int, default=None, help="Florence-2 steps for the curve (default: the profile's).")
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = (args.out / args.profile).absolute()
    if args.curve:
        points, facts = curve(root / "seed-0", args.profile, args.steps, args.eval_every)
        report(f"loop-curve-{args.profile}", points or [{"note": "no points"}], {"florence2_training": facts})
        return
    rows, runs = [], {}
    for seed in args.seeds:
        found = seed_run(root / f"seed-{seed}", args.profile, seed)
        rows += found["rows"]
        runs[seed] = {k: v for k, v in found.items() if k != "rows"}
    detector = [r.get("shift_cost") for r in rows if r["family"] == "object" and r.get("shift_cost") is not None]
    verdict = {"detector_shift_cost": detector,
               "goal_shift_costs_a_third": bool(detector) and min(detector) >= 1 / 3}
    report(f"loop-{args.profile}", flat(rows), {"profile": args.profile, "seeds": args.seeds, "runs": runs,
                                                "verdict": verdict, "detail": rows})
    print(verdict)


if __name__ == "__main__":
    settings.apply()
    main()
