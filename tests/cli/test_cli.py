"""The ``fld`` CLI as a user meets it: help, stats, query, JSON output and clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.store import Store
from tests.rows import table_of, valid_row

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    images = [valid_row("images", image_id=f"img{i}") for i in range(2)]
    images.append(valid_row("images", image_id="bad", status="error", error="truncated PNG",
                            width=None, height=None))
    texts = [valid_row("texts", image_id="img0", text_id="t0", text="a red square"),
             valid_row("texts", image_id="img1", text_id="t1", text="two  blue\tcircles here"),
             valid_row("texts", image_id="img1", text_id="t2", granularity="detailed",
                       text="one two three four five six")]
    regions = [valid_row("regions", image_id=f"img{i % 2}", region_id=f"r{i}") for i in range(4)]
    triplets = [valid_row("triplets", triplet_id="p0", text_id="t0")]
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", images))
        w.write("texts", 0, table_of("texts", texts))
        w.write("regions", 0, table_of("regions", regions))
        w.write("triplets", 0, table_of("triplets", triplets))
    return tmp_path / "ds"


def test_help_lists_every_command():
    """Every command and group the app registers appears in ``fld --help`` (and each group's own help)."""
    import typer.main

    group = typer.main.get_command(app)
    context = group.context_class(group, info_name="fld")
    commands = group.list_commands(context)
    assert {"query", "stats", "verify", "round", "world", "bootstrap", "run", "report", "export", "schedule"} <= set(commands)
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    listed = {line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 1}
    assert set(commands) <= listed, set(commands) - listed
    for name in commands:
        sub = group.get_command(context, name)
        if hasattr(sub, "list_commands"):
            help_text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
            assert all(c in help_text for c in sub.list_commands(context)), name


def test_stats_json_counts_families(dataset):
    result = runner.invoke(app, ["stats", "--data", str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert (payload["images_ok"], payload["images_error"]) == (2, 1)
    rows = {(r["family"], r["type"]): r for r in payload["rows"]}
    assert rows[("text", "brief")]["annotations"] == 2
    assert rows[("text", "brief")]["avg_tokens"] == 3.5  # "a red square" 3, "two blue circles here" 4
    assert rows[("text", "detailed")]["avg_tokens"] == 6
    assert rows[("text", None)]["annotations"] == 3
    assert rows[("text", None)]["avg_tokens"] == round((3 + 4 + 6) / 3, 2)
    assert rows[("region-text", "object")]["per_image"] == 2.0  # 4 regions / 2 readable images
    assert rows[("text-phrase-region", "brief")]["annotations"] == 1


def test_stats_table_output(dataset):
    result = runner.invoke(app, ["stats", "--data", str(dataset)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "region-text" in result.output and "(all)" in result.output


def test_stats_of_one_round(dataset):
    result = runner.invoke(app, ["stats", "--data", str(dataset), "--round", "5", "--json"])
    assert json.loads(result.output)["rows"] == []


def test_query_json(dataset):
    result = runner.invoke(app, ["query", "SELECT count(*) AS n FROM regions", "--data", str(dataset), "--json"])
    assert json.loads(result.output) == [{"n": 4}]


def test_a_runs_output_folder_means_the_dataset_inside_it(dataset, tmp_path, monkeypatch):
    """``make run`` writes fld-data/{dataset,models,world}: ``fld query`` (default --data fld-data)
    and every other dataset command read fld-data/dataset, not an empty folder."""
    run = tmp_path / "fld-data"
    (run / "models").mkdir(parents=True)
    dataset.rename(run / "dataset")
    monkeypatch.chdir(tmp_path)  # where the default --data, fld-data, is the run
    for args in (["--data", str(run)], []):
        result = runner.invoke(app, ["query", "SELECT count(*) AS n FROM regions", *args, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == [{"n": 4}]
    stats = runner.invoke(app, ["stats", "--data", str(run), "--json"])
    assert json.loads(stats.output)["images_ok"] == 2
    (run / "regions").mkdir()  # a folder with tables of its own is a dataset itself, whatever it holds
    result = runner.invoke(app, ["query", "SELECT count(*) AS n FROM regions", "--data", str(run), "--json"])
    assert json.loads(result.output) == [{"n": 0}]


def test_query_refuses_writes_with_a_clear_message(dataset):
    result = runner.invoke(app, ["query", "DELETE FROM regions", "--data", str(dataset)])
    assert result.exit_code == 1
    assert "read-only" in result.output and "Traceback" not in result.output


def test_missing_dataset_folder(tmp_path):
    result = runner.invoke(app, ["stats", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_verify_names_a_damaged_shard(dataset):
    (dataset / "regions" / "round=0" / "shard-00001.parquet").write_bytes(b"")
    result = runner.invoke(app, ["verify", "--data", str(dataset)])
    assert result.exit_code == 1
    assert "shard-00001.parquet" in result.output


def test_data_from_environment(dataset):
    result = runner.invoke(app, ["query", "SELECT 1 AS one", "--json"], env={"FLD_DATA": str(dataset)})
    assert json.loads(result.output) == [{"one": 1}]


def test_a_table_written_to_a_pipe_keeps_its_columns_whole(dataset, monkeypatch):
    """No terminal and no COLUMNS (a `make run` log): wide enough that no header is cut to "…";
    an explicit COLUMNS is still honoured."""
    monkeypatch.delenv("COLUMNS", raising=False)
    sql = "SELECT image_id AS a_rather_long_column_name, uri AS another_long_column_name, width AS third_column_here, " \
          "height AS fourth_column_here FROM images"
    wide = runner.invoke(app, ["query", "--data", str(dataset), sql])
    assert wide.exit_code == 0, wide.output
    assert "another_long_column_name" in wide.output and "fourth_column_here" in wide.output and "…" not in wide.output
    monkeypatch.setenv("COLUMNS", "40")
    narrow = runner.invoke(app, ["query", "--data", str(dataset), sql])
    assert narrow.exit_code == 0 and "…" in narrow.output
