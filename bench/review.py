"""Does the review queue pay? For each world seed: ``make run``'s engine up to round 1 (the zoo's
models), then, from copies of that dataset, K images reviewed by a simulated reviewer (who answers
from the world's pool truth: ``engine.review.simulate``) chosen by the queue or at random, imported
(a review round) and one refinement round; its target-gold detection F1 (and the other headline
metrics) compared, paired over the gold images, with the random choice's and with no review.

    python bench/review.py --seeds 0 1 2 --k 10 25 50     # bench/results/review.json
    python bench/review.py --scale-only                   # queue over 10,000 images, import speed

Goal (issue 15): the queue beats random at every K on detection F1, and by >= 3 points at K = 25.
Two kinds of noise: the gold images (the paired 95% interval of queue minus random) and training
itself (YOLO on CPU is not bit-reproducible: ``--replicates`` repeats the no-review refinement with
the same inputs; a difference smaller than their spread is not a result). Reruns reuse the cases
already measured (each case's ``facts.json``).
``--scale``: the time to build a queue over 10,000 synthetic images and the import's rows/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import reaper, settings  # noqa: E402
from bench.common import report  # noqa: E402

log = logging.getLogger("bench.review")
METRICS = ("region-text/detection_f1", "region-text/mask_iou", "region-text/ocr_word_f1")


def _gold(data: Path, round_id: int) -> dict:
    """The round's gold metrics (value, interval, per-image units) by ``family/metric``."""
    from engine.dataset.store import Store

    rows = Store(data).read("metrics", round_id).to_pylist()
    return {f"{r['family']}/{r['metric']}": r for r in rows
            if r["split"] == "gold" and r["source"] == "dataset" and f"{r['family']}/{r['metric']}" in METRICS}


def case(base: Path, out: Path, strategy: str, k: int, seed: int) -> dict:
    """Copy round 1, review ``k`` images chosen by ``strategy`` (none/queue/random), refine once."""
    from engine.dataset.rounds import next_round
    from engine.dataset.store import Store
    from engine.review.handoff import write_queue
    from engine.review.importer import import_export
    from engine.review.queue import build_queue, random_queue
    from engine.review.simulate import answer_from_truth
    from engine.world.make import World
    from flows.engine import data_engine

    done = out / "facts.json"
    if done.is_file():  # measured by an earlier run of the bench: reused
        facts = json.loads(done.read_text())
        facts["gold"] = _gold(out / "dataset", facts["round"])
        return facts
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(base / "dataset", out / "dataset")
    shutil.copytree(base / "models", out / "models")
    world = World.open(base / "world")
    store = Store(out / "dataset")
    facts: dict = {"strategy": strategy, "k": k, "seed": seed}
    if k:
        start = time.perf_counter()
        entries = build_queue(store, 1) if strategy == "queue" else random_queue(store, seed)
        facts["queue_seconds"] = time.perf_counter() - start
        files = write_queue(store, 1, entries, k, out / "queue")
        export = answer_from_truth(files.tasks, Store(world.truth), out / "export.json")
        start = time.perf_counter()
        imported = import_export(store, export)
        facts.update(import_seconds=time.perf_counter() - start, **{f"imported_{k}": v for k, v in imported.to_dict().items()
                                                                     if k in ("human_rows", "replaced_rows")})
        facts["reviewed"] = [e.image_id for e in entries[:k]]
    first = next_round(store)
    start = time.perf_counter()
    data_engine(str(out / "dataset"), str(Path(world.root) / "gold"), rounds=1, models=str(out / "models"),
                world=str(world.root), profile="default", min_gain=0.0, first_round=first)
    facts["refine_seconds"] = time.perf_counter() - start
    facts["round"] = first
    done.write_text(json.dumps(facts, default=str))
    facts["gold"] = _gold(out / "dataset", first)
    return facts


def error_capture(base: Path, seed: int, ks: list[int]) -> list[dict]:
    """How many of round 1's object errors (kept boxes with no true object of their label at IoU
    0.5, true objects with no kept box) the top K of the queue hold, against K random images."""
    import pyarrow.compute as pc

    from engine.dataset.store import Store
    from engine.review.queue import build_queue, random_queue
    from engine.world.make import World
    from schemas.geometry import match_boxes, rows_by_image

    store, truth = Store(base / "dataset"), Store(World.open(base / "world").truth)
    objects = lambda t: t.filter(pc.equal(t.column("kind"), "object"))  # noqa: E731
    kept, true = rows_by_image(objects(store.read("regions", 1))), rows_by_image(objects(truth.read("regions", 0)))
    queue = build_queue(store, 1)
    errors = {}
    for e in queue:
        pred, gold = kept.get(e.image_id, []), true.get(e.image_id, [])
        matched = len(match_boxes(pred, gold, 0.5))
        errors[e.image_id] = len(pred) - matched + len(gold) - matched
    mean = float(np.mean(list(errors.values())))
    rows = []
    for k in ks:
        drawn = [sum(errors[e.image_id] for e in random_queue(store, s)[:k]) for s in range(200)]
        rows.append({"seed": seed, "k": k, "errors_in_queue_top_k": sum(errors[e.image_id] for e in queue[:k]),
                     "errors_random_k_mean": round(float(np.mean(drawn)), 1),
                     "errors_random_k_95": [float(np.percentile(drawn, 2.5)), float(np.percentile(drawn, 97.5))],
                     "mean_errors_per_image": round(mean, 2)})
    return rows


def seed_runs(root: Path, seed: int, ks: list[int], zoo: Path | None, replicates: int) -> list[dict]:
    from flows.engine import engine_run

    base = root / f"seed-{seed}" / "round1"
    if not (base / "dataset").is_dir() or not _gold(base / "dataset", 1):
        engine_run(str(base), "default", rounds=1, world_seed=seed, zoo=str(zoo) if zoo else None)
    found = [{"strategy": "round 1", "k": 0, "seed": seed, "round": 1, "gold": _gold(base / "dataset", 1)}]
    found.append(case(base, root / f"seed-{seed}" / "none", "none", 0, seed))
    for n in range(1, replicates + 1):  # the same inputs again: how far training alone moves the result
        found.append(case(base, root / f"seed-{seed}" / f"none-r{n}", "none", 0, seed) | {"strategy": f"none (replicate {n})"})
    for k in ks:
        for strategy in ("queue", "random"):
            found.append(case(base, root / f"seed-{seed}" / f"{strategy}-{k}", strategy, k, seed))
            _save(root, found)
    return found


def _save(root: Path, found: list[dict]) -> None:
    """What is measured so far (a long bench killed midway keeps it)."""
    slim = [{k: v for k, v in f.items() if k != "gold"} | {"gold": {m: r["value"] for m, r in f["gold"].items()}}
            for f in found]
    (root / "partial.json").write_text(json.dumps(slim, indent=1, default=str))


def compare(found: list[dict], ks: list[int]) -> tuple[list[dict], dict]:
    """Rows per seed, K and strategy, and the queue-minus-random difference paired over gold images."""
    from engine.dataset.metrics import units_of
    from engine.evaluation.noise import change_interval

    rows, goals = [], {}
    by = {(f["seed"], f["strategy"], f["k"]): f for f in found}
    for f in found:
        for metric in METRICS:
            r = f["gold"].get(metric)
            if not r:
                continue
            row = {"seed": f["seed"], "strategy": f["strategy"], "k": f["k"], "round": f["round"], "metric": metric,
                   "value": r["value"], "low": r["low"], "high": r["high"]}
            other = by.get((f["seed"], "random", f["k"])) if f["strategy"] == "queue" else None
            if other and other["gold"].get(metric):
                diff = change_interval(units_of(other["gold"][metric]), units_of(r))
                row["minus_random"] = r["value"] - other["gold"][metric]["value"]
                row["diff_low"], row["diff_high"] = (diff.low, diff.high) if diff else (None, None)
            rows.append(row)
    det = "region-text/detection_f1"
    seeds = sorted({f["seed"] for f in found})
    repeats = {}
    for f in found:
        if f["strategy"].startswith("none") and f["gold"].get(det):
            repeats.setdefault(f["seed"], []).append(f["gold"][det]["value"])
    spread = [max(v) - min(v) for v in repeats.values() if len(v) > 1]
    noise = max(spread) if spread else None
    goals["training noise: spread of identical refinements"] = {"values": {s: v for s, v in repeats.items()},
                                                                "spread": noise, "met": True}
    for k in ks:
        diffs = [r for r in rows if r["metric"] == det and r["k"] == k and "minus_random" in r]
        goals[f"queue beats random at K={k}"] = {
            "differences": [round(r["minus_random"], 4) for r in diffs],
            "beyond_gold_noise": [r["diff_low"] is not None and r["diff_low"] > 0 for r in diffs],
            "beyond_training_noise": [noise is not None and r["minus_random"] > noise for r in diffs],
            "met": bool(diffs) and len(diffs) == len(seeds) and all(r["minus_random"] > max(0.0, noise or 0.0)
                                                                     for r in diffs)}
    at25 = [r["minus_random"] for r in rows if r["metric"] == det and r["k"] == 25 and "minus_random" in r]
    goals["queue beats random by >= 3 points at K=25"] = {"differences": [round(v, 4) for v in at25],
                                                         "mean": float(np.mean(at25)) if at25 else None,
                                                         "met": bool(at25) and min(at25) >= 0.03}
    return rows, goals


def scale(out: Path, images: int = 10_000, tasks: int = 1_000) -> dict:
    """A queue over ``images`` synthetic images (7 boxes each) and an import of ``tasks`` of them."""
    from engine.dataset.store import Store
    from engine.review.handoff import write_queue
    from engine.review.importer import import_export
    from engine.review.queue import build_queue
    from engine.review.simulate import answer_from_truth
    import pyarrow as pa

    from schemas import schema_for
    from specialists.columns import region_table

    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(0)
    labels = ["square", "circle", "star", "tree", "car", "house", "boat"]
    now = dt.datetime.now(dt.timezone.utc)
    ids = [f"{i:032x}" for i in range(images)]

    def boxes(n):
        xy = rng.uniform(0, 180, (n, 2))
        wh = rng.uniform(10, 100, (n, 2))
        return np.concatenate([xy, np.minimum(xy + wh, [320, 240])], 1).astype(np.float32)

    def region_rows(round_id, specialist, scores):
        n = images * 7
        return region_table(list(np.repeat(ids, 7)), boxes(n), list(rng.choice(labels, n)), scores(n) if scores else None,
                            kind="object", specialist=specialist, version="1", round_id=round_id, id_prefix=specialist)

    store, truth = Store(out / "dataset", create=True), Store(out / "truth", create=True)
    image_rows = pa.Table.from_pylist([{"image_id": i, "uri": f"/images/{i}.png", "width": 320, "height": 240,
                                        "format": "PNG", "split": "pool", "status": "ok", "error": None, "round": 0}
                                       for i in ids], schema=schema_for("images"))
    config = json.dumps({"filters": {"regions": {"min_score": 0.25, "min_score_by_specialist": {"yolo": 0.3}}}})
    with store.writer(0) as w:
        w.write("images", "synthetic", image_rows)
    with store.writer(1) as w:
        w.write("regions", "synthetic", region_rows(1, "yolo", lambda n: rng.uniform(0.3, 1, n)))
        w.write("rounds", "round", pa.Table.from_pylist([{"round": 1, "kind": "specialists", "config": config,
                                                          "status": "completed", "started_at": now, "finished_at": now}],
                                                        schema=schema_for("rounds")))
    with truth.writer(0) as w:
        w.write("images", "synthetic", image_rows)
        w.write("regions", "synthetic", region_rows(0, "world", None))
    start = time.perf_counter()
    entries = build_queue(store, 1)
    queue_seconds = time.perf_counter() - start
    files = write_queue(store, 1, entries, tasks, out / "queue")
    export = answer_from_truth(files.tasks, truth, out / "export.json")
    start = time.perf_counter()
    imported = import_export(store, export)
    import_seconds = time.perf_counter() - start
    human = sum(imported.applied.human.values())
    return {"images": images, "queue_seconds": round(queue_seconds, 2), "tasks": tasks,
            "import_seconds": round(import_seconds, 2), "human_rows": human,
            "rows_per_second": round(human / import_seconds, 1),
            "round_rows_rewritten": int(sum(store.read(t, 2).num_rows for t in ("regions",)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/review-data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--replicates", type=int, default=2, help="Refinements repeated with the same inputs "
                        "(no review) per seed: the training's own noise, which the gold interval does not show.")
    parser.add_argument("--zoo", type=Path, default=None, help="Round 0 from this zoo (default: zoo/).")
    parser.add_argument("--scale-only", action="store_true", help="Only the queue and import speed on synthetic rows.")
    parser.add_argument("--scale-images", type=int, default=10_000)
    args = parser.parse_args()
    from engine.loop.zoo import DEFAULT_ZOO

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = args.out.absolute()
    speed = scale(root / "scale", args.scale_images)
    report("review-scale", [speed])
    if args.scale_only:
        return
    zoo = args.zoo or (DEFAULT_ZOO if DEFAULT_ZOO.is_dir() else None)
    found, captured = [], []
    for seed in args.seeds:
        found += seed_runs(root, seed, args.k, zoo, args.replicates)
        captured += error_capture(root / f"seed-{seed}" / "round1", seed, args.k)
        _save(root, found)
        rows, goals = compare(found, args.k)
        report("review", rows, {"seeds": args.seeds, "k": args.k, "zoo": str(zoo) if zoo else None, "scale": speed,
                                "verdict": goals, "errors_captured": captured,
                                "runs": [{k: v for k, v in f.items() if k != "gold"} for f in found]})
    report("review-errors", captured)
    report("review-goals", [{"goal": g, "met": "yes" if v["met"] else "NO", "figures": str(v)} for g, v in goals.items()])


if __name__ == "__main__":
    settings.apply()
    reaper.watch()  # however the bench ends, Ray's and Prefect's servers it started end with it
    main()
