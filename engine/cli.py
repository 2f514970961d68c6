"""The ``fld`` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import duckdb
import typer

from engine.query import QueryRefused, run_query
from engine.render import err_console, print_json, print_table
from engine.stats import dataset_stats
from engine.store import Store, StoreError
from schemas import SchemaError

app = typer.Typer(
    name="fld",
    help=(
        "fld-engine: build FLD-5B-style annotations (descriptions, region-text pairs, "
        "text-phrase-region triplets) for a folder of images, round after round.\n\n"
        "Datasets are folders of Parquet files; every command takes --data (or FLD_DATA)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

DataOption = Annotated[
    Path,
    typer.Option("--data", "-d", envvar="FLD_DATA", help="Dataset folder.", show_default=True),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
USER_ERRORS = (StoreError, QueryRefused, SchemaError, duckdb.Error, ValueError, FileNotFoundError)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console().print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (INFO).")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="A read-only SQL statement, e.g. \"SELECT kind, count(*) FROM regions GROUP BY kind\".")],
    data: DataOption = Path("fld-data"),
    as_json: JsonOption = False,
) -> None:
    """Query the dataset with DuckDB SQL (read-only).

    Tables: images, texts, regions, triplets, rejected, rounds, metrics.
    """
    try:
        result = run_query(Store(data), sql)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(result.records())
    else:
        print_table(result.columns, result.rows)


@app.command()
def stats(
    data: DataOption = Path("fld-data"),
    round_id: Annotated[int | None, typer.Option("--round", "-r", help="Only this round.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The FLD-5B statistics table: annotations per family and type, per round.

    A row with no type is the family's total. per_image divides by the dataset's readable images.
    """
    try:
        result = dataset_stats(Store(data), round_id)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json({"images_ok": result.images_ok, "images_error": result.images_error,
                    "rows": result.table.records()})
        return
    rows = [tuple("(all)" if v is None and c == "type" else v for c, v in zip(result.table.columns, r))
            for r in result.table.rows]
    print_table(result.table.columns, rows,
                title=f"{data}: {result.images_ok:,} images ({result.images_error:,} unreadable)")


@app.command()
def verify(data: DataOption = Path("fld-data")) -> None:
    """Check that every Parquet shard of the dataset is readable and of this schema version."""
    try:
        store = Store(data)
        count = store.verify()
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    leftovers = store.temp_files()
    err_console().print(f"{count} shard file(s) OK" + (
        f"; {len(leftovers)} temp file(s) left by an interrupted writer (removed by the next writer "
        "of that round)" if leftovers else ""))
