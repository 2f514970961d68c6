"""Prefect flows of the data engine. They orchestrate and pass paths and small summaries; the
images and annotations move through Ray and the store, never through Prefect.

- ``annotation_round``: ingest (optional), the specialists' round, evaluation on gold, stats.
- ``refinement_round``: retrain the specialists on the round before, gate them on gold, relabel
  the pool and gold, merge through the fusion filters, evaluate, summarise.
- ``data_engine``: rounds in sequence until a count, or until gold quality stops improving.
- ``engine_run``: the main job (``fld run``): world, ingest, bootstrap, round 1, refinements.

With no ``PREFECT_API_URL`` they run on Prefect's ephemeral API; with it, on that server
(`docker compose up` gives one; so does `prefect server start`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import flow, task

from engine import settings
from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.metrics import HEADLINE, headline_markdown
from engine.dataset.rounds import next_round
from engine.dataset.stats import dataset_stats
from engine.dataset.store import Store
from engine.evaluation.round_quality import evaluate_round
from engine.loop.summary import write_summary
from engine.round.config import RoundConfig
from engine.round.run import RoundSummary, run_round
from flows.results import Ingested, RoundOutcome, RunOutcome



@task(name="ingest", retries=2, retry_delay_seconds=5)
def ingest_task(data: str, source: str, split: str) -> Ingested:
    summary = ingest(source, Store(data, create=True), IngestConfig(split=split))
    return Ingested(source, split, summary.ok, summary.errors, len(summary.duplicates), summary.already_ingested)


@task(name="specialists-round", retries=2, retry_delay_seconds=10)
def round_task(data: str, config: str, round_id: int, ray_address: str | None, kind: str = "specialists") -> RoundSummary:
    """Runs (or resumes: a retry skips the shards already written) one round on Ray."""
    cfg = RoundConfig.from_file(config)
    if ray_address:
        cfg = dataclasses.replace(cfg, ray_address=ray_address)
    return run_round(Store(data), round_id, cfg, kind=kind)


@task(name="evaluate-on-gold")
def evaluate_task(data: str, round_id: int, gold: str) -> dict[str, float | None]:
    table = evaluate_round(Store(data), round_id, Store(gold))
    return {f"{r['family']}/{r['metric']}": r["value"] for r in table.to_pylist()}


@task(name="publish-headline")
def headline_task(data: str, round_id: int) -> str:
    """The headline metrics with their intervals as a Prefect artifact (key ``fld-headline``): a
    user who schedules rounds on a Prefect server reads them in its UI beside the runs."""
    from prefect.artifacts import create_markdown_artifact

    markdown = headline_markdown(Store(data))
    create_markdown_artifact(markdown=markdown, key="fld-headline",
                             description=f"fld-engine: headline gold metrics after round {round_id} of {data}")
    return markdown


@task(name="round-summary")
def summary_task(data: str, round_id: int) -> dict[str, float | None]:
    table = write_summary(Store(data), round_id)
    return {f"{r['family']}/{r['metric']}": r["value"] for r in table.to_pylist()}


@task(name="retrain-and-gate", retries=1, retry_delay_seconds=5)
def retrain_task(data: str, models: str, world: str, round_id: int, profile: str) -> dict:
    """Retrain the specialists on round ``round_id - 1`` and gate them; returns the round's config path."""
    from engine.loop.profiles import profile as get_profile
    from engine.loop.gates import with_trivial
    from engine.loop.refine import prepare_refinement
    from engine.world.make import World

    w = World.open(world)
    truth, gold = Store(w.truth), Store(w.gold)
    result = prepare_refinement(data, models, round_id, truth, gold, get_profile(profile), with_trivial(truth, gold))
    return {"config": str(result.config), "gates": {k: g.row() for k, (g, _) in result.gates.items()}}


@task(name="apply-reviews")
def review_task(data: str, round_id: int) -> dict[str, int]:
    """People's reviews (``fld review import``) replace the machines' rows of the images they reviewed."""
    from engine.review.apply import apply_to_round

    return dict(apply_to_round(Store(data), round_id).replaced)


@task(name="stats")
def stats_task(data: str, round_id: int) -> list[dict]:
    return dataset_stats(Store(data), round_id).table.records()


@flow(name="annotation-round", log_prints=False)
def annotation_round(data: str, config: str, round_id: int = 1, sources: list[dict] | None = None,
                     gold: str | None = None, ray_address: str | None = None) -> RoundOutcome:
    """Ingest ``sources`` ([{source, split}]), run round ``round_id``, evaluate it on ``gold``."""
    settings.apply()
    ingested = [ingest_task(data, s["source"], s.get("split", "pool")) for s in sources or []]
    summary = round_task(data, config, round_id, ray_address)
    review_task(data, round_id)
    metrics = evaluate_task(data, round_id, gold) if gold else {}
    if gold:
        headline_task(data, round_id)
    return RoundOutcome(round_id, "specialists", summary, metrics, stats_task(data, round_id), ingested)


@flow(name="refinement-round", log_prints=False)
def refinement_round(data: str, models: str, world: str, round_id: int, profile: str = "default",
                     ray_address: str | None = None) -> RoundOutcome:
    """Retrain from the previous round's models, gate, relabel pool and gold, evaluate, summarise."""
    settings.apply()
    retrained = retrain_task(data, models, world, round_id, profile)
    summary = round_task(data, retrained["config"], round_id, ray_address, "refinement")
    review_task(data, round_id)
    metrics = evaluate_task(data, round_id, str(Path(world) / "gold"))
    headline_task(data, round_id)
    return RoundOutcome(round_id, "refinement", summary, metrics, stats_task(data, round_id), gates=retrained["gates"],
                        counts=summary_task(data, round_id))


def round_ids(first: int, rounds: int, reviewed: set[int]) -> list[int]:
    """The ``rounds`` round numbers to run from ``first``, stepping over people's review rounds
    (`fld review import` made them; the machines do not rerun them)."""
    out, r = [], first
    while len(out) < rounds:
        if r not in reviewed:
            out.append(r)
        r += 1
    return out


def stop_reason(previous: dict | None, now: dict, metrics: tuple[str, ...], min_gain: float) -> str | None:
    """Why the engine stops after ``now``: no headline metric gained ``min_gain`` on the round before."""
    if previous is None:
        return None
    gains = {m: now[m] - previous[m] for m in metrics if now.get(m) is not None and previous.get(m) is not None}
    if not gains or max(gains.values()) < min_gain:
        best = max(gains.items(), key=lambda kv: kv[1]) if gains else None
        return f"gold quality stopped improving (best gain {best[0]} {best[1]:+.4f} < {min_gain})" if best else "no gold metric to compare"
    return None


@flow(name="data-engine", log_prints=False)
def data_engine(data: str, gold: str, config: str | None = None, rounds: int = 3, first_round: int | None = None,
                metric: str | None = None, min_gain: float = 0.005, sources: list[dict] | None = None,
                ray_address: str | None = None, models: str | None = None, world: str | None = None,
                profile: str = "default") -> list[RoundOutcome]:
    """Rounds in sequence until ``rounds`` are done or gold quality gains less than ``min_gain``
    (on ``metric``, or on any headline metric when none is named).

    With ``config``: every round runs the same specialists. With ``models`` and ``world``: rounds
    after the first are refinement rounds (retrain, gate, relabel). ``first_round`` None: go on
    from the dataset's rounds (resume the latest if it did not complete, else the next), as a
    scheduled run does."""
    settings.apply()
    if (config is None) == (models is None):
        raise ValueError("give either a round config (same specialists every round) or models and world (refinement)")
    if first_round is None:
        first_round = next_round(Store(data, create=True))
    watched = (metric,) if metric else HEADLINE
    results, previous = [], None
    reviewed = {r["round"] for r in Store(data, create=True).read("rounds", columns=["round", "kind"]).to_pylist()
                if r["kind"] == "review"}
    for k, round_id in enumerate(round_ids(first_round, rounds, reviewed)):
        if config is not None:
            result = annotation_round(data, config, round_id, sources if k == 0 else None, gold, ray_address)
        elif round_id == 1:
            from engine.loop.refine import config_path

            result = annotation_round(data, str(config_path(data, 1)), 1, sources, gold, ray_address)
            result.counts = summary_task(data, 1)
        else:
            result = refinement_round(data, models, world, round_id, profile, ray_address)
        result.stop = stop_reason(previous, result.metrics, watched, min_gain)
        results.append(result)
        if result.stop:
            break
        previous = {**(previous or {}), **{m: v for m, v in result.metrics.items() if v is not None}}
    return results


@task(name="make-world")
def world_task(out: str, profile: str, seed: int | None = None) -> str:
    """The profile's synthetic world (reused when one with the same settings is already there)."""
    from engine.loop.profiles import profile as get_profile
    from engine.world.make import existing_world, make_world

    config = get_profile(profile).world(seed)
    if existing_world(out, config) is None:
        make_world(config, out, overwrite=True)
    return out


@task(name="bootstrap")
def bootstrap_task(data: str, world: str, models: str, profile: str, pretrained_florence2: str | None = None,
                   zoo: str | None = None) -> dict:
    """Round 0's models (from the zoo, or trained on the seed split; reused when unchanged) and
    round 1's config."""
    from engine.loop.bootstrap import bootstrap
    from engine.loop.zoo import adopt, check
    from specialists.training.registry import TRAINERS
    from engine.loop.gates import with_trivial
    from engine.loop.profiles import profile as get_profile
    from engine.loop.refine import first_round
    from engine.world.make import World

    chosen = get_profile(profile)
    if pretrained_florence2:
        chosen = chosen.pretrained("florence2", pretrained_florence2)
    w = World.open(world)
    gates = with_trivial(Store(w.truth), Store(w.gold), record_in=Store(data))  # recorded beside round 0
    if zoo:
        names = tuple(n for n in TRAINERS if not (pretrained_florence2 and n == "florence2"))
        models_set = adopt(check(Path(zoo), w.config, names), w, models, chosen, device=chosen.device,
                           gates=gates)
    else:
        models_set = bootstrap(w, models, chosen, gates=gates)
    models_set.write_metrics(Store(data))
    first = first_round(data, models, models_set, gates, device=chosen.device)
    return {"gold": {n: t.gold for n, t in models_set.models.items()},
            "gates": {k: g.row() for k, (g, _) in first.gates.items()}}


@flow(name="fld-run", log_prints=False)
def engine_run(out: str, profile: str = "default", ray_address: str | None = None,
               pretrained_florence2: str | None = None, rounds: int | None = None, world_seed: int | None = None,
               zoo: str | None = None) -> RunOutcome:
    """The whole engine on the embedded default: make a world, ingest it, bootstrap the
    specialists, run round 1 and the profile's refinement rounds, evaluating each on gold."""
    settings.apply()
    from engine.loop.profiles import profile as get_profile

    p = get_profile(profile)
    root = Path(out)
    world = world_task(str(root / "world"), profile, world_seed)
    data = str(root / "dataset")
    sources = [{"source": str(Path(world) / "images" / s), "split": s} for s in ("pool", "gold")]
    ingested = [ingest_task(data, s["source"], s["split"]) for s in sources]
    boot = bootstrap_task(data, world, str(root / "models"), profile, pretrained_florence2, zoo)
    results = data_engine(data, str(Path(world) / "gold"), rounds=1 + (p.refinement_rounds if rounds is None else rounds - 1),
                          ray_address=ray_address, models=str(root / "models"), world=world, profile=profile,
                          min_gain=0.0, first_round=1)
    return RunOutcome(world, data, ingested, boot, results)


def flow_parameters(**values) -> dict:
    """Parameters of a deployment, without the ones left at None."""
    return {k: v for k, v in values.items() if v is not None}
