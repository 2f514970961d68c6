"""Gold metrics on record with their intervals and per-image units; reading them back pairs each
round with the one before and says whether the change lies within the noise."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.metrics import HEADLINE, headline, headline_markdown, metric_rows
from engine.dataset.store import Store
from engine.evaluation.evaluate import Measurement
from engine.evaluation.evaluate import metric_rows as rows_of
from engine.evaluation.noise import Units
from schemas import schema_for

IMAGES = tuple(f"i{k:03d}" for k in range(150))


def _f1(hits: np.ndarray) -> Measurement:
    units = Units(IMAGES, 2 * hits.astype(float), np.full(len(IMAGES), 2.0))
    return Measurement("region-text", "detection_f1", units.value, units)


def _store(tmp_path, rounds: dict[int, np.ndarray]) -> Store:
    store = Store(tmp_path / "data", create=True)
    for round_id, hits in rounds.items():
        with store.writer(round_id) as writer:
            writer.write("metrics", "gold-dataset", rows_of([_f1(hits), Measurement("text", "brief.bleu4", 0.2)],
                                                            round_id, "dataset"))
    model = pa.Table.from_pylist(
        [{"round": 0, "split": split, "family": "region-text", "metric": "detection_f1", "value": value,
          "source": "model:yolo", "low": value - 0.05, "high": value + 0.05, "images": 150}
         for split, value in (("gold", 0.3), ("seed-gold", 0.6))]
        + [{"round": 0, "split": "gold", "family": "region-text", "metric": "detection_f1", "value": 0.01,
            "source": "trivial"}], schema=schema_for("metrics"))
    with store.writer(0) as writer:
        writer.write("metrics", "bootstrap", model)
    return store


def test_each_gold_metric_keeps_its_interval_and_the_change_is_judged_paired(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.random(150) < 0.4
    same = first.copy()
    same[:2] = ~same[:2]  # two images flipped: noise
    better = first | (rng.random(150) < 0.5)  # many images gained, none lost
    store = _store(tmp_path, {1: first, 2: same, 3: better})
    row = next(r for r in metric_rows(store, "dataset") if r.metric == "detection_f1")
    one, two, three = row.cells[1], row.cells[2], row.cells[3]
    assert one.low < one.value < one.high and one.images == 150 and one.change is None
    assert two.within_noise is True and three.within_noise is False
    assert three.change == three.value - two.value
    bleu = next(r for r in metric_rows(store, "dataset") if r.metric == "brief.bleu4")
    assert bleu.cells[1].low is None and bleu.cells[2].within_noise is None  # corpus-level: no interval


def test_the_headline_sets_round_zero_on_both_domains_beside_the_rounds(tmp_path):
    rng = np.random.default_rng(1)
    store = _store(tmp_path, {1: rng.random(150) < 0.4, 2: rng.random(150) < 0.4})
    head = headline(metric_rows(store))
    assert head.columns == ["trivial", "round 0 (seed-gold)", "round 0", "round 1", "round 2"]
    metric, cells = head.rows[0]
    assert metric == HEADLINE[0]
    assert cells["round 0 (seed-gold)"].value == 0.6 and cells["round 0"].value == 0.3
    assert cells["trivial"].value == 0.01
    markdown = headline_markdown(store)
    assert markdown.splitlines()[0] == "| metric | trivial | round 0 (seed-gold) | round 0 | round 1 | round 2 |"


def test_fld_metrics_shows_intervals_and_marks_changes(tmp_path):
    rng = np.random.default_rng(2)
    first = rng.random(150) < 0.4
    store = _store(tmp_path, {1: first, 2: first.copy()})
    shown = CliRunner().invoke(app, ["metrics", "--data", str(store.root)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    f1 = next(line for line in shown.output.splitlines() if "detection_f1" in line and "dataset" in line)
    value = first.mean()
    assert f"{value:.3f} [" in f1 and "+0.000 ~" in f1
    assert "within the noise" in shown.output
    as_json = json.loads(CliRunner().invoke(app, ["metrics", "--data", str(store.root), "--json"]).stdout)
    row = next(r for r in as_json if r["metric"] == "detection_f1" and r["source"] == "dataset")
    assert row["rounds"]["2"]["within_noise"] is True and row["rounds"]["1"]["low"] < value
