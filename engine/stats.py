"""The FLD-5B statistics table (the Florence-2 paper's Tables 2 and 3) for a dataset.

One row per round, family and type: how many annotations, on how many images, per image of
the dataset, and for texts the average length in whitespace tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.query import QueryResult, connect
from engine.store import Store

TOKENS = "len(string_split(trim(regexp_replace({col}, '\\s+', ' ', 'g')), ' '))"

STATS_SQL = f"""
WITH dataset AS (SELECT greatest(count(*), 1) AS n FROM images WHERE status = 'ok'),
rows AS (
    SELECT round, 'text' AS family, granularity AS type, image_id,
           {TOKENS.format(col='text')} AS tokens
    FROM texts
    UNION ALL
    SELECT round, 'region-text' AS family, kind AS type, image_id, NULL AS tokens FROM regions
    UNION ALL
    SELECT t.round, 'text-phrase-region' AS family, coalesce(x.granularity, 'other') AS type,
           t.image_id, NULL AS tokens
    FROM triplets t LEFT JOIN (SELECT DISTINCT text_id, granularity FROM texts) x USING (text_id)
)
SELECT round, family, type,
       count(*) AS annotations,
       count(DISTINCT image_id) AS images,
       round(count(*) / any_value(dataset.n), 2) AS per_image,
       round(avg(tokens), 2) AS avg_tokens
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
