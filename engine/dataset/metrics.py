"""Reading the ``metrics`` table back: one row per (source, split, family, metric), one cell per
round, each gold cell with its 95% interval and its change from the round before, marked when
that change lies within the noise (``engine.evaluation.noise``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from engine.dataset.query import QueryResult
from engine.dataset.store import Store
from engine.evaluation.noise import MIN_IMAGES, Units, change_interval

HEADLINE = ("region-text/detection_f1", "region-text/mask_iou", "region-text/ocr_word_f1",
            "region-text/region_caption_word_f1", "region-text/region_caption_object", "text/brief.cider",
            "text/detailed.cider", "text/more_detailed.cider",
            "text-phrase-region/grounding_recall@1", "text-phrase-region/triplet_precision")
"""The gold metric that stands for each annotation family (what the report opens with, and what
keeps the data engine going)."""
NON_GOLD_FAMILIES = ("gates", "counts", "dropped", "changes")


@dataclass(frozen=True)
class Cell:
    """One metric in one round."""

    value: float | None
    low: float | None = None
    high: float | None = None
    images: int | None = None
    change: float | None = None
    """From the round before (None for the first round shown)."""
    change_low: float | None = None
    change_high: float | None = None

    @property
    def within_noise(self) -> bool | None:
        """True when the change's paired 95% interval holds 0; None when it cannot be told."""
        if self.change is None or self.change_low is None or self.change_high is None:
            return None
        return self.change_low <= 0.0 <= self.change_high

    @property
    def too_few(self) -> bool:
        """Measured on too few gold images for an interval (shown as such, not as a number)."""
        return self.low is None and self.images is not None and self.images < MIN_IMAGES

    def to_dict(self) -> dict:
        return {**asdict(self), "within_noise": self.within_noise}

    def text(self) -> str:
        """``0.271 [0.231, 0.312]``, then the change from the round before and whether it lies
        within the noise (``~`` within, ``*`` beyond, nothing where it cannot be told)."""
        text = "-" if self.value is None else f"{self.value:.3f}"
        if self.low is not None and self.high is not None:
            text += f" [{self.low:.3f}, {self.high:.3f}]"
        elif self.too_few:
            text += f" (no interval: {self.images} images)"
        if self.change is not None:
            text += f" {self.change:+.3f}" + {True: " ~", False: " *"}.get(self.within_noise, "")
        return text


NOISE_NOTE = ("value [95% interval over gold images] change from the round before: "
              "~ within the noise (its paired interval holds 0), * beyond it")


def text_of(cell: Cell | None) -> str | None:
    return None if cell is None or cell.value is None else cell.text()


@dataclass
class MetricRow:
    source: str
    split: str
    family: str
    metric: str
    cells: dict[int, Cell] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.family}/{self.metric}"

    def to_dict(self) -> dict:
        return {"source": self.source, "split": self.split, "family": self.family, "metric": self.metric,
                "rounds": {str(r): c.to_dict() for r, c in sorted(self.cells.items())}}


def units_of(row: dict) -> Units | None:
    """The per-image units a ``metrics`` row keeps (None when it has none)."""
    if row["unit_images"] is None:
        return None
    return Units(tuple(row["unit_images"]), np.asarray(row["unit_num"], np.float64), np.asarray(row["unit_den"], np.float64))


def metric_rows(store: Store, source: str | None = None) -> list[MetricRow]:
    """Every metric across rounds (of ``source`` only, when given), changes paired by gold image."""
    rows = store.read("metrics").to_pylist()
    if source:
        rows = [r for r in rows if r["source"] == source]
    grouped: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["source"], r["split"], r["family"], r["metric"], r["round"])):
        grouped.setdefault((r["source"], r["split"], r["family"], r["metric"]), []).append(r)
    out = []
    for key, found in grouped.items():
        row, before = MetricRow(*key), None
        for r in found:
            change = found_interval = None
            if before is not None and before["value"] is not None and r["value"] is not None:
                change = r["value"] - before["value"]
                if key[2] not in NON_GOLD_FAMILIES:
                    found_interval = change_interval(units_of(before), units_of(r))
            row.cells[r["round"]] = Cell(r["value"], r["low"], r["high"], r["images"], change,
                                         found_interval.low if found_interval else None,
                                         found_interval.high if found_interval else None)
            before = r
        out.append(row)
    return out


def values_table(found: list[MetricRow]) -> QueryResult:
    """``metric_rows`` as values alone: one row per (source, split, family, metric), one column per round."""
    rounds = sorted({r for row in found for r in row.cells})
    columns = ["source", "split", "family", "metric", *[f"round {r}" for r in rounds]]
    return QueryResult(columns, [(row.source, row.split, row.family, row.metric,
                                  *(row.cells[r].value if r in row.cells else None for r in rounds)) for row in found])


@dataclass(frozen=True)
class Headline:
    """The headline metric of each family, per round, beside the trivial answer (the box prior, a
    constant description: what a model must beat): round 0 is the best bootstrapped model of
    the family (on the target gold, and on the seed domain's gold when the world has one);
    rounds from 1 are the dataset's annotations."""

    rounds: list[int]
    rows: list[tuple[str, dict[str, Cell]]]
    """(metric, {column: cell}); columns ``trivial`` (the trivial answer on gold),
    ``round 0 (seed-gold)``, ``round 0``, ``round 1``, ..."""

    @property
    def columns(self) -> list[str]:
        return [c for c in ["trivial", "round 0 (seed-gold)", *(f"round {r}" for r in self.rounds)]
                if any(c in cells for _, cells in self.rows)]

    def to_dict(self) -> list[dict]:
        return [{"metric": m, **{c: cells[c].to_dict() for c in self.columns if c in cells}} for m, cells in self.rows]


def headline(found: list[MetricRow]) -> Headline:
    """The headline of ``metric_rows`` (all sources)."""
    rounds = sorted({r for row in found for r in row.cells if row.source == "dataset"} |
                    {0 for row in found if row.source.startswith("model:")})
    rows = []
    for metric in HEADLINE:
        cells: dict[str, Cell] = {}
        trivial = next((r for r in found if r.source == "trivial" and r.split == "gold" and r.key == metric), None)
        if trivial is not None and 0 in trivial.cells and trivial.cells[0].value is not None:
            cells["trivial"] = trivial.cells[0]
        for split, column in (("seed-gold", "round 0 (seed-gold)"), ("gold", "round 0")):
            models = [r.cells[0] for r in found if r.source.startswith("model:") and r.split == split
                      and r.key == metric and 0 in r.cells and r.cells[0].value is not None]
            if models:
                cells[column] = max(models, key=lambda c: c.value)
        dataset = next((r for r in found if r.source == "dataset" and r.split == "gold" and r.key == metric), None)
        for r, cell in sorted(dataset.cells.items()) if dataset else ():
            cells[f"round {r}"] = cell
        if any(c.value is not None for c in cells.values()):
            rows.append((metric, cells))
    return Headline(rounds, rows)


def headline_markdown(store: Store) -> str:
    """The headline table as Markdown (a Prefect artifact, a closing note)."""
    head = headline(metric_rows(store))
    if not head.rows:
        return "no gold metrics yet"
    lines = ["| metric | " + " | ".join(head.columns) + " |", "|---" * (len(head.columns) + 1) + "|"]
    lines += ["| " + " | ".join([m, *(text_of(cells.get(c)) or "-" for c in head.columns)]) + " |" for m, cells in head.rows]
    return "\n".join(lines) + f"\n\n{NOISE_NOTE}. Round 0: the bootstrapped models alone.\n"
