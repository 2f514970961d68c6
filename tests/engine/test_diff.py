"""``fld diff``: each kind of change on a hand-made pair of rounds, and rounds that do not exist."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.diff import diff_rounds
from engine.dataset.store import Store, StoreError
from tests.rows import table_of, valid_row


def box(rid, b, label, r, kind="object", image="img0", score=0.9):
    return valid_row("regions", region_id=rid, image_id=image, box=b, label=label, kind=kind, mask=None, round=r, score=score)


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    one = [box("kept", [0, 0, 10, 10], "square", 1), box("relabelled", [20, 20, 40, 40], "circle", 1),
           box("moved", [50, 50, 70, 70], "star", 1), box("gone", [80, 0, 90, 10], "tree", 1),
           box("sign", [0, 50, 20, 60], "OPEN", 1, kind="ocr")]
    two = [box("kept2", [0, 0, 10, 10.5], "square", 2), box("relabelled2", [20, 20, 40, 40], "star", 2),
           box("moved2", [53, 53, 73, 73], "star", 2), box("new", [0, 80, 10, 90], "car", 2, image="img1"),
           box("sign2", [0, 50, 20, 60], "OPEM", 2, kind="ocr")]
    texts = {1: [valid_row("texts", text_id="b1", text="a square", round=1),
                 valid_row("texts", text_id="d1", granularity="detailed", text="A square.", round=1)],
             2: [valid_row("texts", text_id="b2", text="a square and a star", round=2),
                 valid_row("texts", text_id="m2", granularity="more_detailed", text="A square, a star.", round=2)]}
    for r, rows in ((1, one), (2, two)):
        with store.writer(r) as w:
            w.write("regions", 0, table_of("regions", rows))
            w.write("texts", 0, table_of("texts", texts[r]))
            w.write("triplets", 0, table_of("triplets", [valid_row("triplets", triplet_id=f"p{r}", text="a square", phrase="a square", span_end=8,
                                                                   box=[0.0, 0.0, 10.0, 10.0], round=r)]))
    return store


def test_every_kind_of_change_is_found_once(store):
    found = diff_rounds(store, 1, 2)
    got = {(c.family, c.change, c.row_before, c.row_after) for c in found.changes}
    assert got == {
        ("object", "changed", "relabelled", "relabelled2"),  # same box, circle -> star
        ("object", "moved", "moved", "moved2"),  # IoU 0.62: the same star, moved
        ("object", "removed", "gone", None), ("object", "added", None, "new"),
        ("ocr", "changed", "sign", "sign2"),
        ("texts/brief", "changed", "b1", "b2"), ("texts/detailed", "removed", "d1", None),
        ("texts/more_detailed", "added", None, "m2"),
    }  # the kept square (IoU 0.95, same label) and the unchanged triplet are no change
    assert found.by_family()["object"] == {"added": 1, "removed": 1, "changed": 1, "moved": 1}
    assert found.by_image()["img1"] == {"added": 1, "removed": 0, "changed": 0, "moved": 0}
    assert diff_rounds(store, 2, 2).changes == []
    assert {c.family for c in diff_rounds(store, 1, 2, families=("texts",)).changes} == {
        "texts/brief", "texts/detailed", "texts/more_detailed"}


def test_rounds_that_do_not_exist_and_bad_thresholds_are_refused(store):
    with pytest.raises(StoreError, match=r"round 5 does not exist .* \(rounds: 1, 2\)"):
        diff_rounds(store, 1, 5)
    with pytest.raises(ValueError, match="moved_iou"):
        diff_rounds(store, 1, 2, iou=0.9, moved_iou=0.5)
    result = CliRunner().invoke(app, ["diff", "--from", "0", "--to", "2", "--data", str(store.root)])
    assert result.exit_code == 1 and "round 0 does not exist" in result.output
    printed = CliRunner().invoke(app, ["diff", "--from", "1", "--to", "2", "--data", str(store.root), "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["families"]["ocr"]["changed"] == 1
    table = CliRunner().invoke(app, ["diff", "--from", "1", "--to", "2", "--data", str(store.root)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "most-changed images" in table.output
