"""What a round holds beyond its gold metrics: annotation counts, what each filter dropped and
why, and how many labels changed from the round before. Written as ``metrics`` rows (families
``counts``, ``dropped`` and ``changes``), so ``fld metrics`` shows them beside the gold metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from engine.dataset.diff import diff_rounds, rounds_with_rows
from engine.dataset.store import Store
from schemas import schema_for


def _row(round_id: int, family: str, metric: str, value: float | None) -> dict:
    return {"round": round_id, "split": "all", "family": family, "metric": metric,
            "value": None if value is None else float(value), "source": "summary"}


def counts(store: Store, round_id: int) -> list[dict]:
    regions = store.read("regions", round_id, columns=["kind"])
    kinds = Counter(regions.column("kind").to_pylist())
    texts = store.read("texts", round_id, columns=["granularity"])
    rows = [_row(round_id, "counts", f"regions.{k}", kinds.get(k, 0)) for k in ("object", "ocr", "region_caption")]
    rows += [_row(round_id, "counts", f"texts.{g}", n) for g, n in sorted(Counter(texts.column("granularity").to_pylist()).items())]
    rows.append(_row(round_id, "counts", "triplets", store.read("triplets", round_id, columns=["image_id"]).num_rows))
    return rows


def drops(store: Store, round_id: int) -> list[dict]:
    rejected = store.read("rejected", round_id, columns=["filter", "reason"])
    if not rejected.num_rows:
        return []
    found = duckdb.sql("SELECT filter, split_part(reason, ':', 1) AS code, count(*) AS n FROM rejected "
                       "GROUP BY ALL ORDER BY ALL").fetchall()
    return [_row(round_id, "dropped", f"{f}.{code}", n) for f, code, n in found]


@dataclass(frozen=True)
class ImageChange:
    """What changed on one image from round ``round - 1`` to ``round``."""

    image_id: str
    added: int
    removed: int
    reworded: int
    new_texts: int

    @property
    def total(self) -> int:
        return self.added + self.removed + self.reworded + self.new_texts


def image_changes(store: Store, round_id: int, iou: float = 0.5) -> list[ImageChange]:
    """Objects added or removed (a relabelled box counts as one of each; a box that moved but kept
    its label, as kept) and descriptions reworded or new, per image that changed from the round
    before (``engine.dataset.diff``)."""
    if round_id <= 1 or round_id - 1 not in rounds_with_rows(store):
        return []
    found = diff_rounds(store, round_id - 1, round_id, iou, iou, families=("object", "texts")).changes
    per: dict[str, Counter] = {}
    for c in found:
        counts = per.setdefault(c.image_id, Counter())
        if c.family == "object":
            counts["added"] += c.change in ("added", "changed")
            counts["removed"] += c.change in ("removed", "changed")
        else:
            counts["reworded"] += c.change == "changed"
            counts["new_texts"] += c.change == "added"
    return [ImageChange(image, n["added"], n["removed"], n["reworded"], n["new_texts"])
            for image, n in sorted(per.items()) if sum(n.values())]


def changes(store: Store, round_id: int, iou: float = 0.5) -> list[dict]:
    """The round's ``image_changes`` summed: objects added and removed, texts reworded and new."""
    found = image_changes(store, round_id, iou)
    if not found:
        return []
    total = lambda name: sum(getattr(c, name) for c in found)  # noqa: E731
    return [_row(round_id, "changes", "objects_added", total("added")),
            _row(round_id, "changes", "objects_removed", total("removed")),
            _row(round_id, "changes", "texts_reworded", total("reworded")),
            _row(round_id, "changes", "texts_new", total("new_texts"))]


def write_summary(store: Store, round_id: int) -> pa.Table:
    table = pa.Table.from_pylist(counts(store, round_id) + drops(store, round_id) + changes(store, round_id),
                                 schema=schema_for("metrics"))
    with store.writer(round_id) as writer:
        writer.write("metrics", "summary", table)
    return table
