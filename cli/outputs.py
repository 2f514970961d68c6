"""``fld`` commands that write what users take away: the HTML report and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import USER_ERRORS, DataOption, JsonOption, fail
from cli.render import err_console, print_json, print_table
from engine.dataset.store import Store


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
