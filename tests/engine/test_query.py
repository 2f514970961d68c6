"""``fld query`` is read-only: reads pass, every kind of write is refused before it runs."""

from __future__ import annotations

import pytest

from engine.dataset.query import QueryRefused, run_query
from engine.dataset.store import CorruptFileError, Store
from tests.rows import table_of, valid_row


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    rows = [valid_row("regions", region_id=f"r{i}", kind=k) for i, k in enumerate(["object", "object", "ocr"])]
    with store.writer(0) as w:
        w.write("regions", 0, table_of("regions", rows))
        w.write("images", 0, table_of("images", [valid_row("images")]))
    return store


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT kind, count(*) AS n FROM regions GROUP BY kind ORDER BY kind", [("object", 2), ("ocr", 1)]),
        ("FROM texts SELECT count(*)", [(0,)]),  # a table with no shards is an empty view
        ("WITH k AS (SELECT kind FROM regions) SELECT count(DISTINCT kind) FROM k", [(2,)]),
        ("SELECT r.kind FROM regions r JOIN images i USING (image_id) WHERE r.region_id = 'r2'", [("ocr",)]),
    ],
)
def test_reads(store, sql, expected):
    assert run_query(store, sql).rows == expected


@pytest.mark.parametrize("sql", ["SHOW TABLES", "DESCRIBE regions", "PRAGMA show_tables",
                                 "PRAGMA table_info('regions')", "EXPLAIN SELECT * FROM regions"])
def test_read_only_introspection(store, sql):
    assert run_query(store, sql).rows


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("INSERT INTO regions SELECT * FROM regions", "INSERT"),
        ("COPY (SELECT * FROM regions) TO 'out.csv'", "COPY"),
        ("COPY regions TO 'out.parquet'", "COPY"),
        ("ATTACH 'other.db' AS o", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("PRAGMA memory_limit='1GB'", "SET"),
        ("SET threads = 1", "SET"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("DROP VIEW regions", "DROP"),
        ("UPDATE regions SET label = 'x'", "UPDATE"),
        ("DELETE FROM regions", "DELETE"),
        ("EXPORT DATABASE 'dump'", "EXPORT"),
        ("CHECKPOINT", "CALL"),
        ("SELECT 1; DELETE FROM regions", "DELETE"),
    ],
)
def test_writes_are_refused(store, sql, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryRefused, match=f"read-only: a {kind} statement is refused"):
        run_query(store, sql)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert run_query(store, "SELECT count(*) FROM regions").rows == [(3,)]


def test_files_outside_the_dataset_cannot_be_read(store):
    with pytest.raises(Exception, match="(?i)permission|disabled"):
        run_query(store, "SELECT * FROM read_csv('/etc/passwd')")


@pytest.mark.parametrize("sql, fragment", [("", "empty"), ("SELEC 1", "does not parse")])
def test_bad_sql(store, sql, fragment):
    with pytest.raises(QueryRefused, match=fragment):
        run_query(store, sql)


def test_damaged_shard_is_named_before_the_query(store):
    bad = store.shard_path("regions", 0, 9)
    bad.write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="shard-00009.parquet"):
        run_query(store, "SELECT 1")


def test_a_round_filter_holds_under_a_window_function(tmp_path):
    """DuckDB 2.0's hive partitioning (round=N folders) let ``WHERE round = 2`` be dropped below a
    window partitioned by two columns: every round's rows were counted."""
    store = Store(tmp_path / "ds", create=True)
    for round_id in (1, 2):
        rows = [valid_row("regions", region_id=f"r{round_id}-{i}", round=round_id, kind="object") for i in range(round_id)]
        with store.writer(round_id) as w:
            w.write("regions", 0, table_of("regions", rows))
    sql = ("SELECT max(n) FROM (SELECT kind, label, count(*) OVER (PARTITION BY kind, label) n "
           "FROM regions WHERE round = 2)")
    assert run_query(store, sql).rows == [(2,)]
    assert run_query(store, "SELECT typeof(round) FROM regions LIMIT 1").rows == [("INTEGER",)]  # the files' own column
