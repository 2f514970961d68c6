"""`fld run --profile quick` end to end, as a new user runs it: world, ingest, bootstrap, round 1
and a refinement round through Prefect and Ray, metrics printed, and a rerun that reuses all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.dataset.store import Store

FLD = str(Path(sys.executable).with_name("fld"))


@pytest.mark.slow
def test_fld_run_quick_profile_end_to_end(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    out = tmp_path / "run"
    result = subprocess.run([FLD, "run", "--out", str(out), "--profile", "quick", "--json"], capture_output=True,
                            text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    images = [r["summary"]["images"] for r in summary["rounds"]]
    assert len(images) == 2 and images[0] == images[1] > 0  # both rounds annotate the pool and gold
    store = Store(out / "dataset")
    assert store.rounds("rounds") == [1, 2]
    kinds = {r["round"]: (r["kind"], r["status"]) for r in store.read("rounds").to_pylist()}
    assert kinds == {1: ("specialists", "completed"), 2: ("refinement", "completed")}
    families = set(store.read("metrics", 2).column("family").to_pylist())
    assert {"region-text", "text", "gates", "counts", "changes"} <= families
    # round 0: each bootstrapped model on the target gold and on the seed domain's gold
    zero = store.read("metrics", 0).to_pylist()
    assert {(r["source"], r["split"]) for r in zero if r["metric"] == "detection_f1"} == {
        ("model:yolo", "gold"), ("model:yolo", "seed-gold")}
    assert (out / "world" / "seed-gold").is_dir() and json.loads((out / "world" / "world.json").read_text())[
        "config"]["shift"]["name"] == "field"
    for name in ("yolo", "sam", "florence2"):
        assert (out / "models" / "round-0" / name / "manifest.json").is_file()
        assert (out / "models" / "round-2" / name / "manifest.json").is_file()
    again = subprocess.run([FLD, "run", "--out", str(out), "--profile", "quick"], capture_output=True, text=True,
                           env=env, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "gold quality" in again.stdout and "headline" in again.stdout  # the metrics tables
    assert "round 0 (seed-gold)" in again.stdout and "trivial" in again.stdout
    gates = {r["metric"]: r["value"] for r in store.read("metrics", 1).to_pylist() if r["family"] == "gates"}
    assert gates["florence2:<CAPTION>.trivial"] > 0.1  # a constant description clears the old CIDEr floor
    assert Store(out / "dataset").rounds("rounds") == [1, 2]  # nothing ran twice
