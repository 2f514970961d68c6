"""Round summaries: counts, drops by reason, and labels changed from the round before."""

from __future__ import annotations

import pyarrow as pa

from engine.dataset.store import Store
from engine.loop.summary import write_summary
from schemas import schema_for
from tests.rows import valid_row


def write(store: Store, round_id: int, regions: list[dict], texts: list[dict], rejected: list[dict] = ()) -> None:
    with store.writer(round_id) as writer:
        writer.write("regions", 0, pa.Table.from_pylist(regions, schema=schema_for("regions")))
        writer.write("texts", 0, pa.Table.from_pylist(texts, schema=schema_for("texts")))
        if rejected:
            writer.write("rejected", 0, pa.Table.from_pylist(list(rejected), schema=schema_for("rejected")))


def region(rid: str, box, label: str, round_id: int) -> dict:
    return valid_row("regions", region_id=rid, box=box, label=label, mask=None, round=round_id)


def test_summary_counts_drops_and_changes(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    with store.writer(0) as writer:
        writer.write("images", 0, pa.Table.from_pylist([valid_row("images", width=100, height=100)], schema=schema_for("images")))
    write(store, 1, [region("a", [0, 0, 10, 10], "square", 1), region("b", [20, 20, 40, 40], "circle", 1)],
          [valid_row("texts", text="a square", round=1)])
    write(store, 2, [region("a2", [0, 0, 10, 11], "square", 2), region("c", [50, 50, 60, 60], "star", 2),
                     region("d", [20, 20, 40, 40], "star", 2)],
          [valid_row("texts", text="a square and a star", round=2)],
          [valid_row("rejected", round=2, filter="confidence", reason="low_score: 0.1 < 0.25"),
           valid_row("rejected", round=2, filter="confidence", reason="low_score: 0.2 < 0.25"),
           valid_row("rejected", round=2, filter="nms", reason="suppressed: by r1")])
    rows = {(r["family"], r["metric"]): r["value"] for r in write_summary(store, 2).to_pylist()}
    assert rows[("counts", "regions.object")] == 3 and rows[("counts", "texts.brief")] == 1
    assert rows[("dropped", "confidence.low_score")] == 2 and rows[("dropped", "nms.suppressed")] == 1
    # "a" kept (IoU 0.91, same label); "b" relabelled circle -> star counts as one removed and one added
    assert rows[("changes", "objects_added")] == 2 and rows[("changes", "objects_removed")] == 1
    assert rows[("changes", "texts_reworded")] == 1 and rows[("changes", "texts_new")] == 0
    assert "changes" not in {f for f, _ in {(r["family"], r["metric"]) for r in write_summary(store, 1).to_pylist()}}
    assert store.read("metrics", 2).num_rows == len(rows)


def test_changes_count_objects_found_on_images_the_round_before_left_empty(tmp_path):
    """Round 2 finds objects on an image round 1 left empty: they are added objects, and per-image
    changes name each image once."""
    from engine.loop.summary import image_changes

    store = Store(tmp_path / "ds", create=True)
    two = lambda rid, image, r: valid_row("regions", region_id=rid, image_id=image, box=[0, 0, 10, 10],  # noqa: E731
                                          label="square", mask=None, round=r)
    write(store, 1, [two("a", "img0", 1)], [valid_row("texts", text="a square", round=1)])
    write(store, 2, [two("a2", "img0", 2), two("b2", "img1", 2), two("c2", "img1", 2), valid_row(
        "regions", region_id="d2", image_id="img0", box=[50, 50, 60, 60], label="star", mask=None, round=2)],
          [valid_row("texts", text="a square", round=2)])
    found = image_changes(store, 2)
    assert [(c.image_id, c.added, c.removed, c.total) for c in found] == [("img0", 1, 0, 1), ("img1", 2, 0, 2)]
    rows = {(r["family"], r["metric"]): r["value"] for r in write_summary(store, 2).to_pylist()}
    assert rows[("changes", "objects_added")] == 3 and rows[("changes", "objects_removed")] == 0
