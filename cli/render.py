"""Showing results to a person (rich tables) or to a script (JSON)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


PIPE_WIDTH = 240
"""Columns of a table written to a pipe or a log (no terminal, no COLUMNS): rich's default of 80
squeezed `fld rounds` and `fld metrics` to "…" in every `make run` log."""


def console() -> Console:
    """Made per call so the terminal's current width (COLUMNS) is honoured."""
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        return Console(width=PIPE_WIDTH)
    return out


def err_console() -> Console:
    return Console(stderr=True)


def _plain(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def to_json(payload) -> str:
    return json.dumps(payload, default=_plain, indent=2)


def print_json(payload) -> None:
    sys.stdout.write(to_json(payload) + "\n")


def _cell(value) -> Text:
    """Cell text shown verbatim: brackets, markup-like text and control characters in the data
    are printed as they are (control characters made visible), never interpreted."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text(str(value))
    if isinstance(value, float):
        return Text(f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}")
    if isinstance(value, int):
        return Text(f"{value:,}")
    return Text(_visible(str(value)))


def _visible(text: str) -> str:
    """Control characters (terminal escapes, carriage returns) as escapes, so data cannot move the
    cursor, recolour or hide what the table shows."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text)


def print_table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None,
                max_rows: int = 200) -> None:
    """A rich table; numbers right-aligned, nulls dimmed, long results cut with a note."""
    table = Table(title=Text(_visible(title), style="italic") if title else None, header_style="bold cyan")
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
               for i in range(len(columns))]
    for name, right in zip(columns, numeric):
        table.add_column(Text(_visible(str(name))), justify="right" if right else "left")
    for row in rows[:max_rows]:
        table.add_row(*(_cell(v) for v in row))
    out = console()
    out.print(table)
    if len(rows) > max_rows:
        out.print(f"[dim]{len(rows) - max_rows} more rows not shown (use --json or LIMIT)[/dim]")
