"""Progress bars for long commands (rich), with rate and time left; silent when not a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RateColumn(TextColumn):
    """Items per second."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f}/s" if speed else "-/s"


@contextlib.contextmanager
def progress_bar(label: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, total=None, completed=None)`` (a total learnt later can be given then;
    ``completed`` sets the count outright); the bar goes to stderr."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False,
    )
    progress.console.stderr = True
    with progress:
        task = progress.add_task(label, total=total)

        def advance(n: int = 1, total: int | None = None, completed: int | None = None) -> None:
            if total is not None:
                progress.update(task, total=total)
            if completed is not None:  # e.g. a new round starting from 0
                progress.update(task, completed=completed)
            progress.advance(task, n)

        yield advance
