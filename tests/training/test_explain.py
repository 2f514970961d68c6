"""``fld explain``: one row's lineage from a dataset written by hand, every part of it checked,
and the ids it cannot find refused by name."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.loop.explain import UnknownRow, explain
from engine.dataset.store import Store
from tests.rows import table_of, valid_row


@pytest.fixture
def dataset(tmp_path):
    models = tmp_path / "models"
    for k, extra in ((0, {"zoo": {"card": "zoo/yolo/card.json", "command": "fld zoo build --only yolo"}}), (2, {})):
        folder = models / f"round-{k}" / "yolo"
        folder.mkdir(parents=True)
        (folder / "best.pt").write_bytes(b"weights")
        (folder / "manifest.json").write_text(json.dumps({"name": "yolo", "gold": {"region-text/detection_f1": 0.7},
                                                          "seconds": 9.0, **extra}))
    config = {"specialists": [{"name": "yolo", "key": "yolo", "options": {"weights": str(models / "round-2" / "yolo" / "best.pt")}},
                              {"name": "florence2", "key": "florence2", "options": {"checkpoint": "/nowhere"}},
                              {"name": "rapidocr", "key": "rapidocr", "options": {}}],
              "filters": {"regions": {"min_score_by_specialist": {"yolo": 0.4}}}}
    fused = valid_row("regions", region_id="img0-fused0", round=2, specialist="fusion", label="car",
                      members=[{"specialist": "yolo", "specialist_version": "y2", "region_id": "img0-yolo0", "label": "car",
                                "score": 0.9},
                               {"specialist": "florence2", "specialist_version": "f2", "region_id": "img0-f2od0",
                                "label": "car", "score": None}])
    store = Store(tmp_path / "ds", create=True)
    with store.writer(1) as w:
        w.write("regions", 0, table_of("regions", [valid_row("regions", region_id="img0-fused0", round=1, label="boat")]))
        w.write("rounds", 0, table_of("rounds", [valid_row("rounds", round=1)]))
    with store.writer(2) as w:
        w.write("regions", 0, table_of("regions", [fused]))
        w.write("rounds", 0, table_of("rounds", [valid_row("rounds", round=2, kind="refinement", config=json.dumps(config))]))
        w.write("rejected", 0, table_of("rejected", [
            valid_row("rejected", round=2, row_id="img0-yolo1", filter="fusion", reason="merged: into img0-fused0"),
            valid_row("rejected", round=2, row_id="img0-yolo2", filter="fusion", reason="merged: into img0-fused01")]))
        w.write("metrics", 0, table_of("metrics", [
            valid_row("metrics", round=2, family="gates", metric="yolo:<OD>", value=1.0),
            valid_row("metrics", round=2, family="gates", metric="sam:<SEG>", value=1.0)]))
    return store


def test_a_fused_row_names_its_members_merged_rows_models_gates_and_floor(dataset):
    lineage = explain(dataset, "img0-fused0")
    assert (lineage.table, lineage.round, lineage.round_kind) == ("regions", 2, "refinement")  # the latest round
    assert [m["specialist"] for m in lineage.members] == ["yolo", "florence2"]
    assert [m["row_id"] for m in lineage.merged] == ["img0-yolo1"]  # not the row merged into img0-fused01
    assert {m["specialist"] for m in lineage.models} == {"yolo", "florence2"}  # not RapidOCR: it proposed nothing here
    yolo = next(m for m in lineage.models if m["specialist"] == "yolo")
    assert [h["round"] for h in yolo["model"]["history"]] == [2, 0]
    assert yolo["model"]["history"][-1]["zoo"]["command"] == "fld zoo build --only yolo"
    assert next(m for m in lineage.models if m["specialist"] == "florence2")["model"] is None  # its weights are gone
    assert lineage.gates == [{"gate": "yolo:<OD>", "value": 1.0}] and lineage.floors == {"yolo": 0.4}
    assert explain(dataset, "img0-fused0", round_id=1).row["label"] == "boat"


def test_unknown_ids_and_rounds_are_refused_by_name(dataset):
    with pytest.raises(UnknownRow, match="no annotation with id 'nope'"):
        explain(dataset, "nope")
    with pytest.raises(UnknownRow, match="round 7"):
        explain(dataset, "img0-fused0", round_id=7)
    with pytest.raises(UnknownRow, match=r"dropped it in round 2 \(fusion: merged: into img0-fused0\)"):
        explain(dataset, "img0-yolo1")  # not kept: the filter that dropped it, and why
    with pytest.raises(UnknownRow, match="round 1"):
        explain(dataset, "img0-yolo1", round_id=1)
    result = CliRunner().invoke(app, ["explain", "it's \"odd\"", "--data", str(dataset.root)])
    assert result.exit_code == 1 and "no annotation with id" in result.output
    shown = CliRunner().invoke(app, ["explain", "img0-fused0", "--data", str(dataset.root)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "fused from" in shown.output and "zoo/yolo/card.json" in shown.output and "floor of yolo" in shown.output
