"""``fld report`` writes one self-contained HTML file that a real browser (Debian's chromium) renders."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
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
    for heading in ("Headline", "Gates", "What changed", "Rounds", "All metrics by round", "FLD-5B statistics",
                    "What the filters dropped", "Samples (round 0)"):
        assert heading in text
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) >= 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=['\"]?(https?:|file:|/)", text)  # nothing fetched from outside the file


def test_report_opens_with_the_headline_then_gates_then_what_changed(small_world, tmp_path):
    """Two rounds on the gold images (the truth, then the truth less some objects): the headline
    carries intervals and the change, the changed images are drawn in both rounds, and annotation
    text is escaped."""
    from engine.evaluation.round_quality import evaluate_round

    gold = Store(small_world.gold)
    data = Store(tmp_path / "data", create=True)
    regions = gold.read("regions")
    texts = gold.read("texts")
    odd = texts.set_column(texts.schema.get_field_index("text"), "text",
                           pa.array(["<script>alert(1)</script> & co"] * texts.num_rows))
    with data.writer(0) as writer:
        writer.write("images", "gold", gold.read("images"))
    for round_id, (kept, said) in {1: (regions, texts), 2: (regions.slice(0, regions.num_rows // 2), odd)}.items():
        with data.writer(round_id) as writer:
            writer.write("regions", "r", kept.set_column(kept.schema.get_field_index("round"), "round",
                                                         pa.array([round_id] * kept.num_rows, pa.int32())))
            writer.write("texts", "t", said.set_column(said.schema.get_field_index("round"), "round",
                                                        pa.array([round_id] * said.num_rows, pa.int32())))
        evaluate_round(data, round_id, gold)
    text = build_report(data, tmp_path / "r.html", samples=2).read_text()
    order = [text.index(h) for h in ("Headline:", "Gates", "What changed (round 1 to 2)", "Headline metrics by round")]
    assert order == sorted(order)
    headline = text[order[0]:order[1]]
    assert "region-text/detection_f1" in headline and "1.000" in headline and "-0." in headline
    assert "(no interval: 6 images)" in headline  # a gold split this small gives no interval, and says so
    changed = text[order[2]:order[3]]
    assert changed.count("<img") == 4 and "object(s) added" in changed  # two images, each in both rounds
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text


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
