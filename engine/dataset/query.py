"""Read-only SQL over a dataset: DuckDB views named after the tables, and a guard that refuses
anything that would write.

Two layers: each statement's type must be a read (SELECT, EXPLAIN, a read-only PRAGMA), and the
connection itself is sandboxed (in memory, file access limited to the dataset folder, extension
installs off, configuration locked), so a statement that slips past the first layer still
cannot touch anything outside the dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from engine.dataset.store import Store
from schemas import TABLES

READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
READ_ONLY_PRAGMAS = {
    "show_tables", "show_tables_expanded", "table_info", "show", "version",
    "database_size", "storage_info", "platform", "functions", "collations",
}  # fmt: skip
PRAGMA_NAME = re.compile(r"^\s*pragma\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


class QueryRefused(ValueError):
    """A statement that ``fld query`` will not run, with the reason."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per table over the dataset's Parquet shards.

    Every shard's footer is checked first, so a damaged file is named before any query runs.
    A table with no shards yet is an empty view with the table's schema.
    """
    con = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    con.execute(f"SET allowed_directories=[{_quote(str(store.root) + '/')}]")
    for table, schema in TABLES.items():
        files = store.files(table)
        for path in files:
            store.check_file(path, table)
        if files:
            pattern = str(store.root / table / "round=*" / "shard-*.parquet")
            # every shard holds its own ``round`` column; read as a hive partition (DuckDB's
            # default for round=N folders) a WHERE on it was lost under some window functions
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({_quote(pattern)}, hive_partitioning = false)")
        else:
            con.register(f"_empty_{table}", schema.empty_table())
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _empty_{table}")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    """The statements of ``sql``; QueryRefused names the first one that is not a read."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise QueryRefused(f"the query does not parse: {err}") from None
    if not statements:
        raise QueryRefused("the query is empty")
    for statement in statements:
        kind = statement.type
        text = statement.query.strip()
        if kind == duckdb.StatementType.PRAGMA:
            match = PRAGMA_NAME.match(text)
            if match and match.group(1).lower() in READ_ONLY_PRAGMAS:
                continue
        elif kind in READ_ONLY_STATEMENTS:
            continue
        name = kind.name if hasattr(kind, "name") else str(kind)
        raise QueryRefused(
            f"fld query is read-only: a {name} statement is refused ({text[:80]!r}). "
            "Use SELECT (or EXPLAIN / DESCRIBE / SHOW); tables: " + ", ".join(TABLES)
        )
    return statements


def run_query(store: Store, sql: str) -> QueryResult:
    """Run read-only ``sql`` against the dataset; the result of its last statement."""
    con = connect(store)
    try:
        statements = check_read_only(con, sql)
        result = None
        for statement in statements:
            result = con.execute(statement.query)
        columns = [d[0] for d in result.description] if result.description else []
        return QueryResult(columns, result.fetchall())
    finally:
        con.close()
