"""One PNG per gold metric across rounds (matplotlib, headless)."""

from __future__ import annotations

import re
from pathlib import Path

from engine.dataset.query import QueryResult

SKIP_FAMILIES = ("gates", "counts", "dropped", "changes")


def plot_metrics(table: QueryResult, out: str | Path) -> list[Path]:
    """Writes ``<family>__<metric>.png`` for each gold metric measured in at least one round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rounds = [int(c.split()[1]) for c in table.columns if c.startswith("round ")]
    first = table.columns.index(f"round {rounds[0]}") if rounds else len(table.columns)
    written = []
    for row in table.rows:
        source, family, metric = row[0], row[1], row[2]
        if family in SKIP_FAMILIES:
            continue
        points = [(r, v) for r, v in zip(rounds, row[first:]) if v is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_xlabel("round")
        ax.set_ylabel(metric)
        ax.set_title(f"{family} ({source})", fontsize=9)
        ax.set_xticks(rounds)
        fig.tight_layout()
        path = out / (re.sub(r"[^A-Za-z0-9_.@-]+", "_", f"{source}__{family}__{metric}") + ".png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
