"""What a filter decides: for each row, keep it or drop it with a reason; and the split of a
table into kept rows and ``rejected`` rows that keep the whole dropped row (as JSON).

A reason is ``code`` or ``code: detail``; counts are per code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas import schema_for

ID_COLUMNS = {"texts": "text_id", "regions": "region_id", "triplets": "triplet_id"}


@dataclass
class Decision:
    """One filter's verdict on each row of a table (``None``: keep)."""

    filter: str
    reasons: list[str | None]

    @classmethod
    def from_mask(cls, filter_name: str, drop: np.ndarray, reason) -> Decision:
        """Drop where ``drop`` is true, with ``reason`` (a string, or a function of the row index)."""
        reasons: list[str | None] = [None] * len(drop)
        for i in np.flatnonzero(drop):
            reasons[i] = reason(int(i)) if callable(reason) else reason
        return cls(filter_name, reasons)

    @classmethod
    def first_failure(cls, filter_name: str, n: int, checks: list[tuple[np.ndarray, object]]) -> Decision:
        """Each row dropped by the first check (a vectorised mask) that fails it; reason strings
        (or functions of the row index) are only evaluated for dropped rows."""
        reasons: list[str | None] = [None] * n
        decided = np.zeros(n, bool)
        for failed, reason in checks:
            for i in np.flatnonzero(np.asarray(failed, bool) & ~decided):
                reasons[i] = reason(int(i)) if callable(reason) else reason
            decided |= np.asarray(failed, bool)
        return cls(filter_name, reasons)

    @property
    def keep(self) -> np.ndarray:
        return np.array([r is None for r in self.reasons], dtype=bool)

    def counts(self) -> Counter:
        """``kept`` and one entry per reason code."""
        out = Counter(kept=sum(r is None for r in self.reasons))
        out.update(r.split(":", 1)[0] for r in self.reasons if r is not None)
        return out


def rows_as_json(rows: pa.Table) -> pa.Array:
    """Each row as one JSON object string (DuckDB's to_json: ~10x a Python loop). DuckDB is
    imported here, not with the module: training a model on a lent GPU imports the filters (through
    its trainer's measurement code) and needs no SQL engine."""
    import duckdb

    if rows.num_rows == 0:
        return pa.array([], pa.string())
    con = duckdb.connect()
    try:
        con.register("dropped", rows)
        return con.sql("SELECT to_json(d)::VARCHAR AS row FROM dropped d").to_arrow_table().column(0).combine_chunks()
    finally:
        con.close()


def rejected_rows(table: str, rows: pa.Table, filter_name: str, reasons: list[str]) -> pa.Table:
    """``rejected`` rows for dropped ``rows`` of ``table``, the whole row kept as JSON."""
    n = rows.num_rows
    return pa.Table.from_arrays(
        [
            pa.array([table] * n, pa.string()),
            rows.column(ID_COLUMNS[table]).cast(pa.string()),
            rows.column("image_id").cast(pa.string()),
            rows.column("round").cast(pa.int32()),
            pa.array([filter_name] * n, pa.string()),
            pa.array(reasons, pa.string()),
            rows_as_json(rows),
        ],
        schema=schema_for("rejected"),
    )


def apply(table: str, rows: pa.Table, decision: Decision) -> tuple[pa.Table, pa.Table]:
    """(kept rows, rejected rows) of ``rows`` under ``decision``."""
    if len(decision.reasons) != rows.num_rows:
        raise ValueError(f"{decision.filter} decided on {len(decision.reasons)} rows, the table has {rows.num_rows}")
    keep = decision.keep
    dropped = np.flatnonzero(~keep)
    rejected = rejected_rows(table, rows.take(dropped), decision.filter, [decision.reasons[i] for i in dropped])
    return rows.filter(pa.array(keep)), rejected
