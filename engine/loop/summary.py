"""What a round holds beyond its gold metrics: annotation counts, what each filter dropped and
why, and how many labels changed from the round before. Written as ``metrics`` rows (families
``counts``, ``dropped`` and ``changes``), so ``fld metrics`` shows them beside the gold metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

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
    """Objects added or removed (no same-label match at ``iou``) and descriptions reworded or new,
    per image that either round annotated (an image a round left without rows had nothing)."""
    if round_id <= 1:
        return []
    now = {t: store.read(t, round_id) for t in ("regions", "texts")}
    before = {t: store.read(t, round_id - 1) for t in ("regions", "texts")}
    images = {i for rounds in (now, before) for t in rounds.values() for i in t.column("image_id").to_pylist()}
    if not images:
        return []
    keep = lambda t: t.filter(pc.is_in(t.column("image_id"), pa.array(sorted(images), pa.string())))  # noqa: E731
    def objects(table: pa.Table) -> dict[str, list[dict]]:
        kept = keep(table)
        return rows_by_image(kept.filter(pc.equal(kept.column("kind"), "object")))

    a, b = objects(now["regions"]), objects(before["regions"])
    text = lambda t: {(r["image_id"], r["granularity"]): r["text"] for r in keep(t).to_pylist()}  # noqa: E731
    tn, tb = text(now["texts"]), text(before["texts"])
    texts_of: dict[str, list] = {}
    for key in tn:
        texts_of.setdefault(key[0], []).append(key)
    out = []
    for image in sorted(images):
        p, g = a.get(image, []), b.get(image, [])
        matched = len(match_boxes(p, g, iou))
        mine = texts_of.get(image, [])
        reworded = sum(1 for k in mine if k in tb and tn[k] != tb[k])
        out.append(ImageChange(image, len(p) - matched, len(g) - matched, reworded, sum(1 for k in mine if k not in tb)))
    return out


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
