"""Scheduling the data engine: a Prefect deployment served from this process, or registered with
a process work pool (``prefect worker start --pool NAME`` runs it). One run at a time: a run
that would start while the last one still works waits for it, so each goes on from where the
last one stopped (``data_engine`` starts at the dataset's next round)."""

from __future__ import annotations

from pathlib import Path

from flows.engine import data_engine

ROOT = Path(__file__).resolve().parents[1]


def register(name: str, work_pool: str, parameters: dict, cron: str | None = None, interval: int | None = None) -> str:
    """Register the data engine with ``work_pool``; returns the deployment id."""
    deployment = data_engine.from_source(source=str(ROOT), entrypoint="flows/engine.py:data_engine")
    return str(deployment.deploy(name=name, work_pool_name=work_pool, parameters=parameters, concurrency_limit=1,
                                 **_timing(cron, interval)))


def serve(name: str, parameters: dict, cron: str | None = None, interval: int | None = None) -> None:
    """Serve the data engine on a schedule from this process until it is stopped."""
    data_engine.serve(name=name, parameters=parameters, global_limit=1, **_timing(cron, interval))


def _timing(cron: str | None, interval: int | None) -> dict:
    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of a cron schedule or an interval")
    return {"cron": cron} if cron else {"interval": interval}
