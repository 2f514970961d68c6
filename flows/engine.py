"""Prefect flows of the data engine. They orchestrate and pass paths and small summaries; the
images and annotations move through Ray and the store, never through Prefect.

- ``annotation_round``: ingest (optional), the specialists' round, evaluation on gold, stats.
- ``data_engine``: rounds in sequence until a count, or until a gold metric stops improving.

With no ``PREFECT_API_URL`` they run on Prefect's ephemeral API; with it, on that server
(`docker compose up` gives one; so does `prefect server start`).
"""

from __future__ import annotations

from prefect import flow, task

from engine.evaluate import evaluate_round
from engine.ingest import IngestConfig, ingest
from engine.round import run_round
from engine.round_config import RoundConfig
from engine.stats import dataset_stats
from engine.store import Store


@task(name="ingest", retries=2, retry_delay_seconds=5)
def ingest_task(data: str, source: str, split: str) -> dict:
    summary = ingest(source, Store(data, create=True), IngestConfig(split=split))
    return {"source": source, "split": split, "ok": summary.ok, "errors": summary.errors,
            "duplicates": len(summary.duplicates), "already_ingested": summary.already_ingested}


@task(name="specialists-round", retries=2, retry_delay_seconds=10)
def round_task(data: str, config: str, round_id: int, ray_address: str | None) -> dict:
    """Runs (or resumes: a retry skips the shards already written) one round on Ray."""
    cfg = RoundConfig.from_file(config)
    if ray_address:
        cfg = RoundConfig(**{**cfg.__dict__, "ray_address": ray_address})
    summary = run_round(Store(data), round_id, cfg)
    return {"round": round_id, "images": summary.images, "skipped_shards": summary.skipped,
            "seconds": round(summary.seconds, 2), "images_per_s": round(summary.images_per_second, 3),
            "kept": dict(summary.kept), "raw": dict(summary.raw), "failures": summary.failures,
            "filters": {k: dict(v) for k, v in summary.filter_counts.items()}}


@task(name="evaluate-on-gold")
def evaluate_task(data: str, round_id: int, gold: str) -> dict[str, float | None]:
    table = evaluate_round(Store(data), round_id, Store(gold))
    return {f"{r['family']}/{r['metric']}": r["value"] for r in table.to_pylist()}


@task(name="stats")
def stats_task(data: str, round_id: int) -> list[dict]:
    return dataset_stats(Store(data), round_id).table.records()


@flow(name="annotation-round", log_prints=False)
def annotation_round(data: str, config: str, round_id: int = 1, sources: list[dict] | None = None,
                     gold: str | None = None, ray_address: str | None = None) -> dict:
    """Ingest ``sources`` ([{source, split}]), run round ``round_id``, evaluate it on ``gold``."""
    ingested = [ingest_task(data, s["source"], s.get("split", "pool")) for s in sources or []]
    summary = round_task(data, config, round_id, ray_address)
    metrics = evaluate_task(data, round_id, gold) if gold else {}
    return {"ingested": ingested, "round": summary, "metrics": metrics, "stats": stats_task(data, round_id)}


@flow(name="data-engine", log_prints=False)
def data_engine(data: str, config: str, gold: str, rounds: int = 3, first_round: int = 1,
                metric: str = "region-text/detection_f1", min_gain: float = 0.005,
                sources: list[dict] | None = None, ray_address: str | None = None) -> list[dict]:
    """Rounds in sequence until ``rounds`` are done or ``metric`` on gold gains less than ``min_gain``."""
    results, previous = [], None
    for k in range(rounds):
        result = annotation_round(data, config, first_round + k, sources if k == 0 else None, gold, ray_address)
        value = result["metrics"].get(metric)
        result["stop"] = None
        if value is not None and previous is not None and value - previous < min_gain:
            result["stop"] = f"{metric} gained {value - previous:+.4f} < {min_gain}"
        results.append(result)
        if result["stop"]:
            break
        previous = value if value is not None else previous
    return results


def flow_parameters(**values) -> dict:
    """Parameters of a deployment, without the ones left at None."""
    return {k: v for k, v in values.items() if v is not None}
