"""``fld`` commands over a dataset: query, stats, verify, ingest, evaluate, metrics, rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import USER_ERRORS, DataOption, JsonOption, fail
from cli.progress import progress_bar
from cli.render import err_console, print_json, print_table
from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.metrics import NOISE_NOTE, NON_GOLD_FAMILIES, MetricRow, headline, metric_rows, text_of
from engine.dataset.query import run_query
from engine.dataset.rounds import rounds_table
from engine.dataset.stats import dataset_stats
from engine.dataset.store import Store
from engine.evaluation.round_quality import evaluate_round


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
    source: Annotated[str, typer.Argument(help="A folder of images, s3://bucket/prefix/, or a text file (local or s3://) listing image paths/URIs.")],
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
    if not gold.is_dir() or not Store(gold).files("images"):
        raise fail(f"--gold {gold} holds no gold truth (no images table): pass a world's gold folder (WORLD/gold)")
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
        found = metric_rows(Store(data))
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    shown = [row for row in found if source is None or row.source == source]
    if as_json:
        print_json([row.to_dict() for row in shown])
        return
    if not shown:
        err_console().print("no metrics yet: run `fld evaluate` (or a round) first")
        return
    print_metrics(found, source, f"{data}: metrics by round")
    if plot:
        from engine.report.plots import plot_metrics

        written = plot_metrics(shown, plot)
        err_console().print(f"{len(written)} plot(s) in {plot}")




def print_metrics(all_rows: list[MetricRow], source: str | None, title: str) -> None:
    """The headline table (one metric per family, round 0's seed-domain figure beside it), then
    gold metrics with intervals, gates, counts, drops and changes (of ``source``, or all), one
    column per round. ``all_rows``: ``metric_rows`` of every source."""
    head = headline(all_rows)
    if head.rows and source in (None, "dataset"):
        print_table(["metric", *head.columns], [(m.split("/", 1)[1], *(text_of(cells.get(c)) for c in head.columns))
                                                for m, cells in head.rows],
                    title=f"{title}: headline (round 0 = the bootstrapped models alone)")
    found = [row for row in all_rows if source is None or row.source == source]
    rounds = sorted({r for row in found for r in row.cells})
    columns = ["source", "split", "family", "metric", *[f"round {r}" for r in rounds]]
    gold = [row for row in found if row.family not in NON_GOLD_FAMILIES]
    if gold:
        print_table(columns, [(r.source, r.split, r.family, r.metric, *(text_of(r.cells.get(k)) for k in rounds))
                              for r in gold], title=f"{title}: gold quality")
        err_console().print(f"[dim]{NOISE_NOTE}[/dim]")
    groups = {"gates (1 = the task's predictions entered the round)": "gates", "annotations kept": "counts",
              "dropped by filters": "dropped", "changed from the round before": "changes"}
    for name, family in groups.items():
        picked = [r for r in found if r.family == family]
        shown = sorted({k for r in picked for k in r.cells})
        rows = [(r.source, r.split, r.family, r.metric, *(r.cells[k].value if k in r.cells else None for k in shown))
                for r in picked]
        if rows:
            print_table([*columns[:4], *[f"round {k}" for k in shown]], rows, title=f"{title}: {name}")


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


def explain(
    row_id: Annotated[str, typer.Argument(help="A region_id, text_id or triplet_id.")],
    data: DataOption = Path("fld-data"),
    round_id: Annotated[int | None, typer.Option("--round", "-r", help="The round to look in (default: the latest "
                                                 "that holds the id; ids repeat across rounds).")] = None,
    as_json: JsonOption = False,
) -> None:
    """One annotation's lineage: its round, the specialist and model that proposed it (back to the
    zoo card or the bootstrap it started from), fused members and merged rows, its specialist's
    floor and the gates that admitted it."""
    from engine.loop.explain import explain as find_lineage

    try:
        lineage = find_lineage(Store(data), row_id, round_id)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(lineage.to_dict())
        return
    row = lineage.row
    what = row.get("label") or row.get("text") or row.get("phrase")
    shown = [("table", lineage.table), ("round", f"{lineage.round} ({lineage.round_kind or 'unknown kind'})"),
             ("image", row["image_id"]), ("kind", row.get("kind") or row.get("granularity") or "triplet"), ("text", what),
             ("box", ", ".join(f"{v:.1f}" for v in row["box"]) if row.get("box") else "-"),
             ("specialist", f"{row['specialist']}@{row['specialist_version']}"),
             ("score", f"{row['score']} ({row['score_source']})"), ("mask by", row.get("mask_specialist") or "-")]
    print_table(["field", "value"], shown, title=f"{row_id}")
    if lineage.review:
        print_table(["field", "value"], list(lineage.review.items()), title="a person's review")
    if lineage.members:
        print_table(["member", "version", "region", "label", "score"],
                    [(m["specialist"], m["specialist_version"], m["region_id"], m["label"], m["score"]) for m in lineage.members],
                    title="fused from")
    if lineage.merged:
        print_table(["row", "filter", "reason"], [(m["row_id"], m["filter"], m["reason"]) for m in lineage.merged],
                    title="rows the filters merged into it")
    for model in lineage.models:
        history = (model["model"] or {}).get("history", [])
        rows = [(h["round"], h["folder"], (h["zoo"] or {}).get("card") or ("trained here" if h["round"] else "bootstrapped"))
                for h in history] or [("-", ", ".join(f"{k}={v}" for k, v in model["options"].items()), "no manifest")]
        print_table(["round", "model", "from"], rows, title=f"{model['key']} ({model['specialist']}): its model's line")
    if lineage.gates or lineage.floors:
        print_table(["gate or floor", "value"], [(g["gate"], g["value"]) for g in lineage.gates]
                    + [(f"floor of {k}", v) for k, v in lineage.floors.items()], title=f"round {lineage.round}: what admitted it")


def diff(
    from_round: Annotated[int, typer.Option("--from", help="The earlier round.")],
    to_round: Annotated[int, typer.Option("--to", help="The later round.")],
    data: DataOption = Path("fld-data"),
    iou: Annotated[float, typer.Option(help="Boxes overlapping this much are the same annotation.")] = 0.5,
    moved_iou: Annotated[float, typer.Option("--moved-iou", help="A matched box overlapping its old self less "
                                             "than this has moved.")] = 0.9,
    images: Annotated[int, typer.Option(help="How many of the most-changed images to list.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """What changed from one round to another: per family and per image, annotations added,
    removed, changed (label, phrase or text) and moved (box)."""
    from engine.dataset.diff import CHANGES, diff_rounds

    try:
        found = diff_rounds(Store(data), from_round, to_round, iou, moved_iou)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(found.to_dict())
        return
    families = found.by_family()
    print_table(["family", *CHANGES], [(f, *(n[k] for k in CHANGES)) for f, n in families.items()] or [("-", 0, 0, 0, 0)],
                title=f"round {from_round} -> round {to_round}: {len(found.changes):,} changes")
    per_image = sorted(found.by_image().items(), key=lambda kv: -sum(kv[1].values()))[:images]
    if per_image:
        print_table(["image", *CHANGES, "total"], [(i, *(n[k] for k in CHANGES), sum(n.values())) for i, n in per_image],
                    title=f"the {len(per_image)} most-changed images (fld diff --json lists every change)")
