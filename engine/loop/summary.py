"""What a round holds beyond its gold metrics: annotation counts, what each filter dropped and
why, and how many labels changed from the round before. Written as ``metrics`` rows (families
``counts``, ``dropped`` and ``changes``), so ``fld metrics`` shows them beside the gold metrics."""

from __future__ import annotations

from collections import Counter

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store
from schemas import schema_for
from schemas.geometry import match_boxes, rows_by_image


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


def changes(store: Store, round_id: int, iou: float = 0.5) -> list[dict]:
    """Objects added or removed (no same-label match at ``iou``) and descriptions reworded, on the
    images both rounds annotated."""
    if round_id <= 1:
        return []
    now = {t: store.read(t, round_id) for t in ("regions", "texts")}
    before = {t: store.read(t, round_id - 1) for t in ("regions", "texts")}
    images = set(now["regions"].column("image_id").to_pylist()) | set(now["texts"].column("image_id").to_pylist())
    images &= set(before["regions"].column("image_id").to_pylist()) | set(before["texts"].column("image_id").to_pylist())
    if not images:
        return []
    keep = lambda t: t.filter(pc.is_in(t.column("image_id"), pa.array(sorted(images), pa.string())))  # noqa: E731
    objects = lambda t: rows_by_image(keep(t).filter(pc.equal(t.column("kind"), "object")))  # noqa: E731
    a, b = objects(now["regions"]), objects(before["regions"])
    added = removed = 0
    for image in images:
        p, g = a.get(image, []), b.get(image, [])
        matched = len(match_boxes(p, g, iou))
        added, removed = added + len(p) - matched, removed + len(g) - matched
    text = lambda t: {(r["image_id"], r["granularity"]): r["text"] for r in keep(t).to_pylist()}  # noqa: E731
    tn, tb = text(now["texts"]), text(before["texts"])
    reworded = sum(1 for k in tn.keys() & tb.keys() if tn[k] != tb[k])
    return [_row(round_id, "changes", "objects_added", added), _row(round_id, "changes", "objects_removed", removed),
            _row(round_id, "changes", "texts_reworded", reworded),
            _row(round_id, "changes", "texts_new", len(tn.keys() - tb.keys()))]


def write_summary(store: Store, round_id: int) -> pa.Table:
    table = pa.Table.from_pylist(counts(store, round_id) + drops(store, round_id) + changes(store, round_id),
                                 schema=schema_for("metrics"))
    with store.writer(round_id) as writer:
        writer.write("metrics", "summary", table)
    return table
