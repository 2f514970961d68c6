"""The FLD-5B statistics table (the Florence-2 paper's Tables 2 and 3) for a dataset.

One row per round, family and type: how many annotations, how many per readable image of the
dataset, and for texts the average length in whitespace tokens. Counts are summed per group
first, so the cost is one scan of each table (no distinct counts over millions of ids).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.dataset.query import QueryResult, connect
from engine.dataset.store import Store

TOKENS = "len(regexp_split_to_array(trim({col}), '\\s+'))"

STATS_SQL = f"""
WITH dataset AS (SELECT nullif(count(*), 0) AS images FROM images WHERE status = 'ok'),
rows AS (
    SELECT round, 'text' AS family, granularity AS type, count(*) AS n,
           sum({TOKENS.format(col='text')}) AS tokens
    FROM texts GROUP BY ALL
    UNION ALL
    SELECT round, 'region-text', kind, count(*), NULL FROM regions GROUP BY ALL
    UNION ALL
    SELECT t.round, 'text-phrase-region', coalesce(x.granularity, 'other'), count(*), NULL
    FROM triplets t LEFT JOIN (SELECT DISTINCT text_id, granularity FROM texts) x USING (text_id)
    GROUP BY ALL
)
SELECT round, family, type,
       sum(n)::BIGINT AS annotations,
       round(sum(n) / any_value(dataset.images), 2) AS per_image,
       round(sum(tokens) / sum(n), 2) AS avg_tokens
FROM rows, dataset
GROUP BY GROUPING SETS ((round, family, type), (round, family))
ORDER BY round, family, type NULLS LAST
"""


@dataclass
class DatasetStats:
    table: QueryResult
    images_ok: int
    images_error: int


def dataset_stats(store: Store, round_id: int | None = None) -> DatasetStats:
    """Annotation counts per round, family and type (type NULL: the family's total)."""
    con = connect(store)
    try:
        sql = STATS_SQL
        if round_id is not None:
            sql = f"SELECT * FROM ({STATS_SQL}) WHERE round = {int(round_id)}"
        result = con.execute(sql)
        columns = [d[0] for d in result.description]
        rows = result.fetchall()
        (images_ok, images_error), = con.execute(
            "SELECT count(*) FILTER (status = 'ok'), count(*) FILTER (status = 'error') FROM images"
        ).fetchall()
    finally:
        con.close()
    return DatasetStats(QueryResult(columns, rows), images_ok, images_error)
