"""The store: atomic and idempotent shard writes, the round lock, temp-file cleanup, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.dataset.store import CorruptFileError, RoundLockedError, Store, StoreError
from schemas import SchemaError
from tests.rows import table_of, valid_row

REPO = Path(__file__).resolve().parents[2]


def texts(n: int, round_id: int = 0, prefix: str = "t") -> pa.Table:
    return table_of("texts", [valid_row("texts", text_id=f"{prefix}{i}", round=round_id) for i in range(n)])


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist.*fld world make"):
        Store(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store(tmp_path / "f")


def test_write_lays_out_hive_partitions_and_reads_back(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    with store.writer(2) as w:
        path = w.write("texts", 7, texts(3, round_id=2))
    assert path == tmp_path / "ds" / "texts" / "round=2" / "shard-00007.parquet"
    assert store.read("texts").num_rows == 3
    assert store.rounds("texts") == [2]


def test_rewrite_replaces_the_shard(tmp_path):
    store = Store(tmp_path, create=True)
    with store.writer(0) as w:
        w.write("texts", 0, texts(5))
        w.write("texts", 0, texts(2, prefix="new"))
    back = store.read("texts")
    assert back.column("text_id").to_pylist() == ["new0", "new1"]
    assert len(store.files("texts")) == 1


def test_invalid_rows_write_nothing_and_keep_the_old_shard(tmp_path):
    store = Store(tmp_path, create=True)
    with store.writer(0) as w:
        w.write("texts", 0, texts(2))
        bad = table_of("texts", [valid_row("texts", granularity="epic")])
        with pytest.raises(SchemaError, match="shard texts/round=0/shard-00000.parquet"):
            w.write("texts", 0, bad)
    assert store.read("texts").num_rows == 2
    assert store.temp_files() == []


def test_rows_of_another_round_are_refused(tmp_path):
    store = Store(tmp_path, create=True)
    with store.writer(1) as w, pytest.raises(StoreError, match=r"round\(s\) \[0\].*holds round 1"):
        w.write("texts", 0, texts(1, round_id=0))


def test_writer_outside_with_is_refused(tmp_path):
    with pytest.raises(StoreError, match="outside its `with` block"):
        Store(tmp_path, create=True).writer(0).write("texts", 0, texts(1))


def test_failed_write_leaves_no_temp_and_keeps_old_shard(tmp_path, monkeypatch):
    store = Store(tmp_path, create=True)
    with store.writer(0) as w:
        w.write("texts", 0, texts(2))

        def broken(table, where, **kwargs):
            Path(where).write_bytes(b"PAR1 half")
            raise OSError("disk full")

        monkeypatch.setattr(pq, "write_table", broken)
        with pytest.raises(OSError, match="disk full"):
            w.write("texts", 0, texts(9))
    monkeypatch.undo()
    assert store.read("texts").num_rows == 2
    assert store.temp_files() == []


def test_two_writers_on_one_round_are_refused(tmp_path):
    store = Store(tmp_path, create=True)
    with store.writer(0):
        with pytest.raises(RoundLockedError, match="round 0 .* another process.*pid"):
            with store.writer(0):
                pass
        with store.writer(1):  # another round is free
            pass
    with store.writer(0):  # released on exit
        pass


def _child(code: str, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "DS": str(tmp_path)},
    )


def test_lock_holds_across_processes_and_dies_with_a_killed_writer(tmp_path):
    child = _child(
        """
        import os, sys, time
        from engine.dataset.store import Store
        with Store(os.environ["DS"], create=True).writer(0):
            print("locked", flush=True)
            time.sleep(600)
        """,
        tmp_path,
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RoundLockedError, match=f"pid.*{child.pid}"):
            with Store(tmp_path).writer(0):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with Store(tmp_path).writer(0) as w:  # the OS released the dead writer's lock
        w.write("texts", 0, texts(1))


def test_temp_files_of_a_killed_writer_are_ignored_then_cleaned(tmp_path):
    store = Store(tmp_path, create=True)
    with store.writer(0) as w:
        w.write("texts", 0, texts(2))
    leftover = store.round_dir("texts", 0) / ".shard-00001.parquet.abc123.tmp"
    leftover.write_bytes(b"PAR1 partial")
    assert store.read("texts").num_rows == 2  # readers never see it
    assert store.temp_files() == [leftover]
    with store.writer(1):
        assert leftover.exists()  # another round's writer leaves it alone
    with store.writer(0):
        assert not leftover.exists()


@pytest.mark.parametrize(
    "content, fragment",
    [(b"", "not a readable Parquet"), (b"hello, not parquet", "not a readable Parquet")],
)
def test_damaged_files_are_named(tmp_path, content, fragment):
    store = Store(tmp_path, create=True)
    with store.writer(0) as w:
        good = w.write("texts", 0, texts(2))
    bad = store.shard_path("texts", 0, 1)
    bad.write_bytes(content)
    with pytest.raises(CorruptFileError, match=f"{bad}.*{fragment}"):
        store.read("texts")
    assert pq.read_table(good).num_rows == 2


def test_truncated_parquet_is_named(tmp_path):
    store = Store(tmp_path, create=True)
    with store.writer(0) as w:
        path = w.write("texts", 0, texts(50))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(CorruptFileError, match="shard-00000.parquet is not a readable Parquet"):
        store.verify()


def test_foreign_parquet_is_refused(tmp_path):
    store = Store(tmp_path, create=True)
    target = store.shard_path("texts", 0, 0)
    target.parent.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), target)
    with pytest.raises(CorruptFileError, match="holds table None, expected 'texts'"):
        store.read("texts")


def test_markers_record_completed_shards(tmp_path):
    store = Store(tmp_path, create=True)
    with store.writer(3) as w:
        w.mark_done(4, {"images": 10})
        assert w.done_shards() == {"00004": {"images": 10}}
    marker = tmp_path / "_markers" / "round=3" / "shard-00004.json"
    assert json.loads(marker.read_text()) == {"images": 10}


@pytest.mark.parametrize("shard", [-1, "../escape", "a b", ""])
def test_bad_shard_names(tmp_path, shard):
    with pytest.raises(ValueError, match="shard"):
        Store(tmp_path, create=True).shard_path("texts", 0, shard)


def test_image_sizes_skip_unreadable_images(tmp_path):
    store = Store(tmp_path, create=True)
    rows = [valid_row("images"), valid_row("images", image_id="bad", status="error",
                                            error="truncated", width=None, height=None)]
    with store.writer(0) as w:
        w.write("images", 0, table_of("images", rows))
    assert store.image_sizes() == {"img0": (3, 4)}
