"""The ``fld`` command line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import duckdb
import typer

from engine.evaluation.evaluate import evaluate_round
from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.metrics import metrics_table
from cli.progress import progress_bar
from engine.dataset.query import QueryRefused, run_query
from cli.render import err_console, print_json, print_table
from engine.round.run import PROGRESS
from engine.round.config import RoundConfig
from engine.dataset.rounds import rounds_table
from engine.round.runtime import ClusterError
from engine.dataset.sources import SourceError
from engine.dataset.stats import dataset_stats
from engine.dataset.store import Store, StoreError
from engine.world.config import WorldConfig
from engine import settings
from engine.world.make import make_world
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

world_app = typer.Typer(help="The synthetic world: images with known ground truth (the embedded default).",
                        no_args_is_help=True)
app.add_typer(world_app, name="world")
round_app = typer.Typer(help="Annotation rounds: run (or resume) one.", no_args_is_help=True)
app.add_typer(round_app, name="round")

DataOption = Annotated[
    Path,
    typer.Option("--data", "-d", envvar="FLD_DATA", help="Dataset folder.", show_default=True),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
USER_ERRORS = (StoreError, QueryRefused, SchemaError, SourceError, ClusterError, duckdb.Error, ValueError,
               FileNotFoundError)


@contextlib.contextmanager
def round_progress(label: str) -> Iterator[None]:
    """A progress bar fed by the rounds run inside (each round counts its images from 0)."""
    with progress_bar(label) as advance:
        token = PROGRESS.set(lambda done, total: advance(0, total=total, completed=done))
        try:
            yield
        finally:
            PROGRESS.reset(token)


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
    settings.apply()  # offline, and each library's files under FLD_HOME (before Ray, Prefect, YOLO start)


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


@world_app.command("make")
def world_make(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create the world in.")],
    images: Annotated[int, typer.Option("--images", "-n", help="Number of images (split into seed, pool, gold).")] = 200,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed; the same seed gives the same world.")] = 0,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 320,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 240,
    overwrite: Annotated[bool, typer.Option(help="Replace a world already in --out.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Draw a synthetic world: images on disk plus their exact ground truth.

    Makes OUT/images/{seed,pool,gold}/, OUT/truth (seed and pool truth, a dataset) and
    OUT/gold (the gold truth, read only by the evaluator).
    """
    try:
        config = WorldConfig(images=images, seed=seed, width=width, height=height)
        with progress_bar("drawing", config.images) as advance:
            world = make_world(config, out, overwrite=overwrite, progress=advance)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    counts = config.split_counts()
    if as_json:
        print_json({"out": str(world.root), "version": world.version, "splits": counts})
        return
    print_table(["split", "images", "folder"],
                [(s, n, str(world.images(s))) for s, n in counts.items()],
                title=f"world {world.version} in {world.root}")


@app.command("ingest")
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


@app.command()
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


@app.command()
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
    _print_metrics(Store(data), source, f"{data}: metrics by round")
    if plot:
        from engine.report.plots import plot_metrics

        written = plot_metrics(table, plot)
        err_console().print(f"{len(written)} plot(s) in {plot}")


def _print_metrics(store: Store, source: str | None, title: str) -> None:
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


@round_app.command("run")
def round_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Round config (TOML or JSON): specialists, filters, shard size.")],
    data: DataOption = Path("fld-data"),
    round_id: Annotated[int, typer.Option("--round", "-r", help="Round number (>= 1).")] = 1,
    gold: Annotated[Path | None, typer.Option(help="Gold truth to evaluate the round on (a world's gold folder).")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                                    help="An existing Ray cluster; default: Ray on this machine.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Annotate the dataset's pool and gold images: a Prefect flow running specialists on Ray,
    then filters, Parquet, and (with --gold) evaluation.

    Rerunning an interrupted round skips the shards it finished. PREFECT_API_URL points the flow
    at a Prefect server; without it Prefect's ephemeral API is used.
    """
    from flows.engine import annotation_round

    try:
        RoundConfig.from_file(config)  # a bad config is reported before Prefect and Ray start
        Store(data)
        with round_progress(f"round {round_id}"):
            result = annotation_round(str(data), str(config), round_id, gold=str(gold) if gold else None,
                                      ray_address=ray_address)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(result.to_dict())
        return
    summary = result.summary
    rows = [("images", summary.images), ("skipped shards", summary.skipped), ("images/s", round(summary.images_per_second, 3)),
            ("failures", summary.failures)]
    rows += [(f"{t} raw -> kept", f"{summary.raw.get(t, 0):,} -> {summary.kept.get(t, 0):,}")
             for t in ("texts", "regions", "triplets")]
    print_table([f"round {round_id}", "value"], rows, title="round summary")
    dropped = [(name, code, n) for name, counts in summary.filter_counts.items() for code, n in counts.items()
               if code not in ("kept", "fused") and n]
    if dropped:
        print_table(["filter", "reason", "rows"], dropped, title="what the filters dropped (see the rejected table)")
    if result.metrics:
        print_table(["metric", "value"], [(k, v) for k, v in result.metrics.items() if v is not None],
                    title=f"round {round_id} on gold")


@app.command()
def bootstrap(
    world: Annotated[Path, typer.Option("--world", "-w", help="A world made by `fld world make`.")],
    models: Annotated[Path, typer.Option("--models", "-m", help="Folder for the trained models.")] = Path("fld-data/models"),
    profile: Annotated[str, typer.Option(help="Training budget: quick, default or large.")] = "default",
    only: Annotated[list[str] | None, typer.Option(help="Train only these (yolo, sam, grabcut, florence2); repeatable.")] = None,
    pretrained_florence2: Annotated[Path | None, typer.Option("--pretrained-florence2",
                                    help="Start Florence-2 from this checkpoint folder (e.g. Florence-2-base).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: JsonOption = False,
) -> None:
    """Train the embedded default's specialists on a world's seed split, offline, and measure each
    on its gold split. A rerun with unchanged inputs reuses the trained models."""
    from specialists.training.registry import TRAINERS
    from engine.loop.bootstrap import bootstrap as run_bootstrap
    from engine.loop.profiles import profile as get_profile
    from engine.world.make import World

    try:
        chosen = get_profile(profile).on(device)
        if pretrained_florence2:
            chosen = chosen.pretrained("florence2", str(pretrained_florence2))
        result = run_bootstrap(World.open(world), models, chosen, tuple(only or TRAINERS),
                               step=lambda what: err_console().print(f"[bold]{what}[/bold] ..."))
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    rows = result.gold_table()
    if as_json:
        print_json({"models": {n: str(t.folder) for n, t in result.models.items()}, "gold": rows})
        return
    print_table(["specialist", "gold metric", "value"], [(r["specialist"], r["metric"], r["value"]) for r in rows],
                title=f"bootstrapped specialists in {models}")


@app.command("run")
def run_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the world, dataset and models.")] = Path("fld-data"),
    profile: Annotated[str, typer.Option(help="quick (a few minutes), default (< 15 min on 2 CPU cores) or large.")] = "default",
    rounds: Annotated[int | None, typer.Option(help="Rounds in all (default: 1 + the profile's refinement rounds).")] = None,
    pretrained_florence2: Annotated[Path | None, typer.Option("--pretrained-florence2",
                                    help="Start Florence-2 from this checkpoint folder instead of from nothing.")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                                    help="An existing Ray cluster; default: Ray on this machine.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The main job: make a synthetic world, ingest it, bootstrap the specialists on its seed
    split, run the specialists' round and refinement rounds (Prefect flows on Ray), and print the
    per-round gold metrics. Rerunning reuses what is done (world, models, finished shards)."""
    from engine.loop.profiles import profile as get_profile
    from flows.engine import engine_run

    try:
        get_profile(profile)
        with round_progress("images annotated (this round)"):
            result = engine_run(str(out.absolute()), profile, ray_address,
                                str(pretrained_florence2) if pretrained_florence2 else None, rounds)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(result.to_dict())
        return
    _print_metrics(Store(result.data), None, f"{out}: per-round metrics")


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("fld-report.html"),
    data: DataOption = Path("fld-data/dataset"),
    round_id: Annotated[int | None, typer.Option("--round", "-r", help="Round to draw samples from (default: the last).")] = None,
    samples: Annotated[int, typer.Option(help="Sample images to draw.")] = 6,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """One self-contained HTML file of a run: metric plots per round, FLD-5B statistics, filter
    drop reasons, and sample images with boxes, masks and grounded phrases drawn on them."""
    from engine.report.html import build_report

    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite to replace it")
    try:
        path = build_report(Store(data), out, samples, round_id)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    err_console().print(f"report written to {path} ({path.stat().st_size / 1e6:.1f} MB)")


EXPORT_FORMATS = ("coco", "florence2", "hf", "yolo")


@app.command()
def export(
    format: Annotated[str, typer.Argument(help="coco | florence2 (JSONL) | hf (datasets Parquet) | yolo (labels).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (a .jsonl file for florence2).")],
    data: DataOption = Path("fld-data/dataset"),
    round_id: Annotated[int, typer.Option("--round", "-r", help="Round to export.")] = 1,
    split: Annotated[list[str] | None, typer.Option(help="Splits to export (repeatable; default: pool).")] = None,
    family: Annotated[list[str] | None, typer.Option(help="Families: text, object, ocr, region_caption, grounding (repeatable; default: all).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Export a round to the formats users train with. Gold images are never exported unless
    `--split gold` is asked for explicitly."""
    from engine.exports.coco import export_coco
    from engine.exports.florence2_jsonl import export_florence2
    from engine.exports.hf_parquet import export_hf
    from engine.exports.selection import FAMILIES, select
    from engine.exports.yolo_labels import export_yolo

    writers = {"coco": export_coco, "florence2": export_florence2, "hf": export_hf, "yolo": export_yolo}
    if format not in writers:
        raise fail(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}", 2)
    try:
        selection = select(Store(data), round_id, tuple(split or ("pool",)), tuple(family or FAMILIES))
        counts = writers[format](selection, out, overwrite=overwrite)
    except (*USER_ERRORS, FileExistsError) as err:
        raise fail(str(err)) from None
    if as_json:
        print_json({"format": format, "out": str(out), **counts})
        return
    print_table(["exported", "count"], list(counts.items()), title=f"round {round_id} -> {format}: {out}")


@app.command()
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


@app.command()
def schedule(
    config: Annotated[Path, typer.Option("--config", "-c", help="Round config (TOML or JSON).")],
    gold: Annotated[Path, typer.Option(help="Gold truth the data engine measures each round on.")],
    data: DataOption = Path("fld-data"),
    cron: Annotated[str | None, typer.Option(help='Cron schedule, e.g. "0 2 * * *" (02:00 daily).')] = None,
    interval: Annotated[int | None, typer.Option(help="Or: seconds between runs.")] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "fld-data-engine",
    rounds: Annotated[int, typer.Option(help="Rounds per run (the engine stops early when gold stops improving).")] = 3,
    work_pool: Annotated[str | None, typer.Option("--work-pool", help="Register with a Prefect process work pool "
                                                  "(run `prefect worker start --pool NAME`) instead of serving here.")] = None,
) -> None:
    """Schedule the data engine as a Prefect deployment (cron or interval).

    Without --work-pool, this command serves the deployment itself until stopped (Ctrl-C).
    Point PREFECT_API_URL at a Prefect server so the schedule outlives this process.
    """
    from flows import schedule as scheduling

    if (cron is None) == (interval is None):
        raise fail("give exactly one of --cron or --interval", 2)
    try:
        RoundConfig.from_file(config)
        parameters = {"data": str(data.absolute()), "config": str(config.absolute()), "gold": str(gold.absolute()),
                      "rounds": rounds}
        if work_pool:
            deployment_id = scheduling.register(name, work_pool, parameters, cron, interval)
            err_console().print(f"deployment data-engine/{name} registered ({deployment_id}); "
                                f"start a worker: prefect worker start --pool {work_pool}")
            return
        err_console().print(f"serving data-engine/{name} ({'cron ' + cron if cron else f'every {interval} s'}); Ctrl-C stops")
        scheduling.serve(name, parameters, cron, interval)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
