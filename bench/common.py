"""Shared helpers of the benchmarks: timing, machine facts, JSON out and a printed table."""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def timer(out: dict, key: str):
    start = time.perf_counter()
    yield
    out[key] = time.perf_counter() - start


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def report(name: str, rows: list[dict], extra: dict | None = None) -> Path:
    """Write ``bench/results/<name>.json`` and print the rows as a table."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2))
    table = Table(title=f"bench/{name}.py  ->  {path.relative_to(RESULTS.parent.parent)}")
    for column in rows[0]:
        table.add_column(column, justify="right" if isinstance(rows[0][column], (int, float)) else "left")
    for row in rows:
        table.add_row(*(f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                        for v in row.values()))
    Console(width=max(Console().width, 200)).print(table)  # a log or pipe: no columns squeezed to "…"
    return path
