"""``fld`` commands over a dataset: query, stats, verify, ingest, evaluate, metrics, rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import USER_ERRORS, DataOption, JsonOption, fail
from cli.progress import progress_bar
from cli.render import err_console, print_json, print_table
from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.metrics import metrics_table
from engine.dataset.query import run_query
from engine.dataset.rounds import rounds_table
from engine.dataset.stats import dataset_stats
from engine.dataset.store import Store
from engine.evaluation.evaluate import evaluate_round


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


def ingest_command(
    source: Annotated[str, typer.Argument(help="A folder of images, or a text file listing image paths/URIs.")],
    data: DataOption = Path("fld-data"),
    split: Annotated[str, typer.Option(help="Split of these images: seed, pool, gold or unlabelled.")] = "pool",
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels (decompression bombs).")] = IngestConfig.max_pixels,
    as_json: JsonOption = False,
) -> None:
    """Add images to the dataset: one row each, with size, format and content-hash id.

    Unreadable files become rows with status error and the reason; the rest go on.
    """
    try:
        config = IngestConfig(split=split, max_pixels=max_pixels)
        store = Store(data, create=True)
        with progress_bar("ingesting") as advance:
            summary = ingest(source, store, config, progress=advance)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    result = {"ok": summary.ok, "errors": summary.errors, "duplicates": len(summary.duplicates),
              "already_ingested": summary.already_ingested, "skipped_files": summary.skipped_files}
    if as_json:
        print_json({**result, "error_rows": [{"uri": r["uri"], "error": r["error"]} for r in summary.error_rows],
                    "duplicate_of": [{"uri": a, "same_as": b} for a, b in summary.duplicates]})
        return
    print_table(list(result), [tuple(result.values())], title=f"ingested {source} into {data} ({split})")
    if summary.error_rows:
        print_table(["uri", "error"], [(r["uri"], r["error"]) for r in summary.error_rows[:20]],
                    title="images that could not be used (rows with status error)")


def evaluate(
    gold: Annotated[Path, typer.Option("--gold", help="The gold truth: a world's gold folder (WORLD/gold).")],
    data: DataOption = Path("fld-data"),
    round_id: Annotated[int, typer.Option("--round", "-r", help="Round to evaluate.")] = 0,
    source: Annotated[str, typer.Option(help="Name of what is measured (recorded with each metric).")] = "dataset",
    as_json: JsonOption = False,
) -> None:
    """Measure a round's annotations on the gold split and store the metrics."""
    try:
        table = evaluate_round(Store(data), round_id, Store(gold), source)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    rows = table.select(["family", "metric", "value"]).to_pylist()
    if as_json:
        print_json(rows)
        return
    print_table(["family", "metric", "value"], [tuple(r.values()) for r in rows],
                title=f"round {round_id} on gold ({source})")


def metrics(
    data: DataOption = Path("fld-data"),
    source: Annotated[str | None, typer.Option(help="Only metrics of this source (e.g. dataset).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write one PNG per gold metric across rounds into this folder.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Refinement metrics per round: gold-split quality per family, the gates, annotation counts,
    what the filters dropped and how many labels changed from the round before."""
    try:
        table = metrics_table(Store(data), source)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(table.records())
        return
    if not table.rows:
        err_console().print("no metrics yet: run `fld evaluate` (or a round) first")
        return
    print_metrics(Store(data), source, f"{data}: metrics by round")
    if plot:
        from engine.report.plots import plot_metrics

        written = plot_metrics(table, plot)
        err_console().print(f"{len(written)} plot(s) in {plot}")


def print_metrics(store: Store, source: str | None, title: str) -> None:
    """Gold metrics, gates, counts, drops and changes: one table per family group, one column per round."""
    table = metrics_table(store, source)
    groups = {"gold quality": lambda f: f not in ("gates", "counts", "dropped", "changes"),
              "gates (1 = the task's predictions entered the round)": lambda f: f == "gates",
              "annotations kept": lambda f: f == "counts", "dropped by filters": lambda f: f == "dropped",
              "changed from the round before": lambda f: f == "changes"}
    family = table.columns.index("family")
    for name, keep in groups.items():
        rows = [r for r in table.rows if keep(r[family])]
        if rows:
            print_table(table.columns, rows, title=f"{title}: {name}")



def rounds(data: DataOption = Path("fld-data"), as_json: JsonOption = False) -> None:
    """Rounds with their status, timings and counts."""
    try:
        table = rounds_table(Store(data))
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(table.records())
        return
    print_table(table.columns, table.rows, title=f"{data}: rounds")
