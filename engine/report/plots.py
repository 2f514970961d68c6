"""Plots of the headline gold metrics across rounds, with their 95% intervals (matplotlib, headless)."""

from __future__ import annotations

import re
from pathlib import Path

from engine.dataset.metrics import HEADLINE, MetricRow


def plot_metrics(rows: list[MetricRow], out: str | Path) -> list[Path]:
    """Writes ``<source>__<family>__<metric>.png`` for each headline metric of the dataset (on
    gold) measured in at least one round, with error bars where the metric has an interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for row in rows:
        if row.key not in HEADLINE or row.split != "gold" or row.source != "dataset":
            continue
        points = [(r, c) for r, c in sorted(row.cells.items()) if c.value is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
        xs, values = [p[0] for p in points], [p[1].value for p in points]
        below = [v - (c.low if c.low is not None else v) for v, (_, c) in zip(values, points)]
        above = [(c.high if c.high is not None else v) - v for v, (_, c) in zip(values, points)]
        ax.errorbar(xs, values, yerr=[below, above], marker="o", capsize=4)
        ax.set_xlabel("round")
        ax.set_ylabel(row.metric)
        ax.set_title(f"{row.family} on gold (95% intervals)", fontsize=9)
        ax.set_xticks(xs)
        fig.tight_layout()
        path = out / (re.sub(r"[^A-Za-z0-9_.@-]+", "_", f"{row.source}__{row.family}__{row.metric}") + ".png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
