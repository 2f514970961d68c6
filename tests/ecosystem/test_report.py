"""``fld report`` writes one self-contained HTML file that a real browser (Debian's chromium) renders."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.store import Store, StoreError
from engine.report.html import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained(small_world, tmp_path):
    path = build_report(Store(small_world.truth), tmp_path / "r.html", samples=3)
    text = path.read_text()
    for heading in ("Rounds", "Metrics by round", "FLD-5B statistics", "What the filters dropped", "Samples (round 0)"):
        assert heading in text
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) >= 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=['\"]?(https?:|file:|/)", text)  # nothing fetched from outside the file


def test_report_refuses_a_dataset_without_rounds_and_an_existing_file(tmp_path, small_world):
    with pytest.raises(StoreError, match="no annotation rounds"):
        build_report(Store(tmp_path / "empty", create=True), tmp_path / "r.html")
    (tmp_path / "taken.html").write_text("mine")
    result = CliRunner().invoke(app, ["report", "--data", str(small_world.truth), "--out", str(tmp_path / "taken.html")])
    assert result.exit_code == 1 and "already exists" in result.output
    assert (tmp_path / "taken.html").read_text() == "mine"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_a_headless_browser_renders_the_report(small_world, tmp_path):
    path = build_report(Store(small_world.truth), tmp_path / "r.html", samples=4)
    shot = tmp_path / "shot.png"
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "FLD-5B statistics" in dom.stdout
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,3000", path.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (3000, 1200)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    # the drawn samples (coloured shapes, masks, boxes) make a share of strongly coloured pixels;
    # a page whose images failed to decode is black text on white
    assert (saturation > 80).mean() > 0.01
