"""The Prefect flows on Prefect's ephemeral API, with Ray inside the round task."""

from __future__ import annotations

import json

import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import Store


@pytest.fixture
def ocr_config(tmp_path):
    path = tmp_path / "round.toml"
    path.write_text('shard_size = 4\nsplits = ["gold"]\n[[specialists]]\nname = "rapidocr"\n')
    return path


def test_data_engine_runs_rounds_until_gold_stops_improving(small_world, tmp_path, ocr_config):
    from flows.engine import data_engine

    data = tmp_path / "ds"
    sources = [{"source": str(small_world.images("gold")), "split": "gold"}]
    results = data_engine(str(data), str(small_world.gold), config=str(ocr_config), rounds=3,
                          metric="region-text/ocr_word_recall", sources=sources)
    assert len(results) == 2  # the same specialists twice: no gain, so the engine stops
    assert results[1].stop.startswith("gold quality stopped improving (best gain region-text/ocr_word_recall +0.0000")
    first = results[0]
    assert first.ingested[0].ok == small_world.config.split_counts()["gold"]
    assert first.summary.images == first.ingested[0].ok and first.summary.failures == 0
    recall = first.metrics["region-text/ocr_word_recall"]
    assert recall is not None and 0.0 < recall <= 1.0
    store = Store(data)
    assert store.rounds("rounds") == [1, 2] and store.rounds("metrics") == [1, 2]
    statuses = {r["round"]: r["status"] for r in store.read("rounds").to_pylist()}
    assert statuses == {1: "completed", 2: "completed"}


def test_a_flow_retry_resumes_the_round(small_world, tmp_path, ocr_config):
    from flows.engine import annotation_round

    data = Store(tmp_path / "ds", create=True)
    ingest(str(small_world.images("gold")), data, IngestConfig(split="gold"))
    first = annotation_round(str(data.root), str(ocr_config), 1)
    again = annotation_round(str(data.root), str(ocr_config), 1)
    assert again.summary.images == 0 and again.summary.skipped > 0
    assert first.summary.images == small_world.config.split_counts()["gold"]


def test_a_round_outcome_prints_as_json_with_its_counts(small_world, tmp_path, ocr_config):
    """Counters survive the trip to JSON as counts per name (dataclasses.asdict would turn them
    into counts of (name, count) pairs, which JSON cannot hold)."""
    from cli.render import to_json
    from flows.engine import annotation_round

    data = Store(tmp_path / "ds", create=True)
    ingest(str(small_world.images("gold")), data, IngestConfig(split="gold"))
    outcome = annotation_round(str(data.root), str(ocr_config), 1)
    printed = json.loads(to_json(outcome.to_dict()))
    assert printed["summary"]["kept"]["regions"] == outcome.summary.kept["regions"] > 0
    assert printed["summary"]["filter_counts"]["geometry"]["kept"] == outcome.summary.filter_counts["geometry"]["kept"]


def test_a_round_publishes_its_headline_table_as_a_prefect_artifact(small_world, tmp_path, ocr_config):
    """A user who schedules rounds on a Prefect server reads the headline metrics in its UI."""
    from prefect.artifacts import Artifact

    from flows.engine import annotation_round

    data = Store(tmp_path / "ds", create=True)
    ingest(str(small_world.images("gold")), data, IngestConfig(split="gold"))
    annotation_round(str(data.root), str(ocr_config), 1, gold=str(small_world.gold))
    found = Artifact.get("fld-headline")
    assert found is not None and str(data.root) in found.description
    assert found.type == "markdown" and "| ocr_word_f1" not in found.data  # names keep their family
    assert "| region-text/ocr_word_f1 | " in found.data and "no interval: 6 images" in found.data


def test_the_loop_steps_over_review_rounds():
    from flows.engine import round_ids

    assert round_ids(1, 3, set()) == [1, 2, 3]
    assert round_ids(1, 3, {2}) == [1, 3, 4]  # round 2 is people's: a rerun of `fld run` does not redo it
    assert round_ids(3, 2, {2, 3, 5}) == [4, 6]
