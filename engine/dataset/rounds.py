"""``fld rounds``: every round with its status, timings and counts. A round recorded as running
whose lock nobody holds was interrupted (rerun it to resume)."""

from __future__ import annotations

import fcntl
import os

from engine.dataset.query import QueryResult, connect
from engine.dataset.store import Store

ROUNDS_SQL = """
WITH counts AS (
    SELECT round, count(*) FILTER (t = 'texts') AS texts, count(*) FILTER (t = 'regions') AS regions,
           count(*) FILTER (t = 'triplets') AS triplets
    FROM (SELECT round, 'texts' AS t FROM texts UNION ALL SELECT round, 'regions' FROM regions
          UNION ALL SELECT round, 'triplets' FROM triplets) GROUP BY round
),
dropped AS (SELECT round, count(*) AS rejected FROM rejected GROUP BY round),
failed AS (SELECT round, count(DISTINCT image_id) AS failed_images FROM failures GROUP BY round)
SELECT r.round, r.kind, r.status, r.started_at, r.finished_at,
       round(epoch(r.finished_at) - epoch(r.started_at), 1) AS seconds,
       coalesce(c.texts, 0) AS texts, coalesce(c.regions, 0) AS regions, coalesce(c.triplets, 0) AS triplets,
       coalesce(d.rejected, 0) AS rejected, coalesce(f.failed_images, 0) AS failed_images
FROM rounds r LEFT JOIN counts c USING (round) LEFT JOIN dropped d USING (round) LEFT JOIN failed f USING (round)
ORDER BY r.round
"""


def held(store: Store, round_id: int) -> bool:
    """Whether a live process holds the round's writer lock."""
    path = store.root / "_locks" / f"round={round_id}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def rounds_table(store: Store) -> QueryResult:
    con = connect(store)
    try:
        result = con.execute(ROUNDS_SQL)
        columns = [d[0] for d in result.description]
        rows = result.fetchall()
    finally:
        con.close()
    status = columns.index("status")
    rows = [tuple("interrupted" if i == status and v == "running" and not held(store, row[0]) else v
                  for i, v in enumerate(row)) for row in rows]
    return QueryResult(columns, rows)


def next_round(store: Store) -> int:
    """The round a scheduled run should do: the latest round when it did not complete (a rerun
    resumes it), else the one after the last completed round (1 on a new dataset)."""
    rounds = store.read("rounds", columns=["round", "status"]).to_pylist()
    if not rounds:
        return 1
    latest = max(rounds, key=lambda r: r["round"])
    return latest["round"] if latest["status"] != "completed" else latest["round"] + 1
