"""What every ``fld`` command shares: the common options, the errors shown as a message (not a
traceback), and the progress bar of rounds run inside a flow."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.markup import escape

from cli.progress import progress_bar
from cli.render import err_console
from engine.dataset.query import QueryRefused
from engine.dataset.sources import SourceError
from engine.dataset.store import StoreError
from engine.round.run import PROGRESS
from engine.round.runtime import ClusterError, WorkerDeaths
from schemas import TABLES, SchemaError

log = logging.getLogger(__name__)
RUN_DATASET = "dataset"
"""Where a run's output folder (``fld run --out``, ``make run``'s ``fld-data``) keeps its dataset."""


def dataset_folder(data: Path) -> Path:
    """``data``, or the dataset inside it when ``data`` is a run's output folder (a ``dataset``
    folder and no table of its own): ``fld query`` after ``make run`` reads what the run made
    instead of an empty folder."""
    inner = data / RUN_DATASET
    if inner.is_dir() and not any((data / table).exists() for table in TABLES):
        log.info("%s is a run's output folder: using its dataset, %s", data, inner)
        return inner
    return data


DataOption = Annotated[
    Path,
    typer.Option("--data", "-d", envvar="FLD_DATA", callback=dataset_folder, show_default=True,
                 help="Dataset folder (a run's output folder means the dataset in it)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
USER_ERRORS = (StoreError, QueryRefused, SchemaError, SourceError, ClusterError, WorkerDeaths, duckdb.Error, ValueError,
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
    err_console().print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
