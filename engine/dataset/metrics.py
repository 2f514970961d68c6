"""Reading the ``metrics`` table back: one row per (source, family, metric), one column per round."""

from __future__ import annotations

from engine.dataset.query import QueryResult, connect
from engine.dataset.store import Store


def metrics_table(store: Store, source: str | None = None) -> QueryResult:
    con = connect(store)
    try:
        where = "WHERE source = $source" if source else ""
        params = {"source": source} if source else {}
        rows = con.execute(
            f"SELECT round, source, family, metric, value FROM metrics {where} ORDER BY round, source, family, metric",
            params,
        ).fetchall()
    finally:
        con.close()
    rounds = sorted({r[0] for r in rows})
    cells: dict[tuple, dict[int, float | None]] = {}
    for round_id, src, family, metric, value in rows:
        cells.setdefault((src, family, metric), {})[round_id] = value
    columns = ["source", "family", "metric", *[f"round {r}" for r in rounds]]
    return QueryResult(columns, [(*key, *(v.get(r) for r in rounds)) for key, v in cells.items()])
