"""The dataset store: one Parquet file per (table, round, shard), laid out Hive-style.

    <root>/<table>/round=<r>/shard-<name>.parquet

Writes are atomic (a hidden temp file beside the target, fsynced, then renamed over it) and
idempotent (rewriting a shard replaces it). Only one writer may hold a round at a time
(``RoundWriter`` takes an OS file lock that dies with its process, so a killed writer never
leaves a stale lock). Temp files left by a killed writer never match the shard pattern, so
readers ignore them, and the next writer of that round deletes them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import SCHEMA_VERSION, TABLES, schema_for
from schemas.validate import ISSUE_LIMIT, conform_or_raise, raise_if_invalid, validate_table

log = logging.getLogger(__name__)

SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TEMP_SUFFIX = ".tmp"
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""A full disk, a quota reached, a file-size limit: a write that more space would let through."""
COMPRESSION = "zstd"


class StoreError(RuntimeError):
    """A dataset folder that cannot be used as asked; the message says what to do."""


class CorruptFileError(StoreError):
    """A file in the dataset that is not a readable Parquet shard of the expected table."""


class RoundLockedError(StoreError):
    """Another writer holds the round."""


def shard_label(shard: int | str) -> str:
    """``3`` -> ``00003``; names made of letters, digits, ``-`` and ``_`` are kept as they are."""
    if isinstance(shard, int):
        if shard < 0:
            raise ValueError(f"shard number must be >= 0, got {shard}")
        return f"{shard:05d}"
    if not SHARD_NAME.match(shard):
        raise ValueError(f"shard name {shard!r} must be 1-64 letters, digits, '-' or '_'")
    return shard


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write) -> None:
    """Call ``write(temp_path)`` then rename the temp file over ``path``; never leaves it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in FULL:
            raise StoreError(f"no space left to write {path.name} in {path.parent} ({os.strerror(err.errno)}): "
                             "nothing half-written was kept; free space and rerun (what was finished stays)") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


class Store:
    """A dataset folder of Parquet shards; ``create=True`` makes the folder if it is missing."""

    def __init__(self, root: str | Path, create: bool = False):
        self.root = Path(root).expanduser().absolute()
        if not self.root.exists():
            if not create:
                raise StoreError(
                    f"dataset folder {self.root} does not exist: pass --data with an existing "
                    "dataset, or make one with `fld world make` / `fld ingest`"
                )
            self.root.mkdir(parents=True)
        elif not self.root.is_dir():
            raise StoreError(f"dataset path {self.root} is a file, not a folder")

    # -- layout ---------------------------------------------------------------------------
    def round_dir(self, table: str, round_id: int) -> Path:
        schema_for(table)
        if round_id < 0:
            raise ValueError(f"round must be >= 0, got {round_id}")
        return self.root / table / f"round={round_id}"

    def shard_path(self, table: str, round_id: int, shard: int | str) -> Path:
        return self.round_dir(table, round_id) / f"shard-{shard_label(shard)}.parquet"

    def files(self, table: str, round_id: int | None = None) -> list[Path]:
        """The table's shard files (all rounds, or one), sorted; temp files are never listed."""
        schema_for(table)
        pattern = f"round={round_id}/shard-*.parquet" if round_id is not None else "round=*/shard-*.parquet"
        return sorted((self.root / table).glob(pattern))

    def rounds(self, table: str = "images") -> list[int]:
        """Rounds that have at least one shard of ``table``."""
        found = {int(p.parent.name.split("=", 1)[1]) for p in self.files(table)}
        return sorted(found)

    def temp_files(self) -> list[Path]:
        return sorted(self.root.glob(f"*/round=*/.*{TEMP_SUFFIX}"))

    # -- reading --------------------------------------------------------------------------
    def check_file(self, path: Path, table: str) -> pq.FileMetaData:
        """The file's Parquet metadata, or CorruptFileError naming the file and the problem."""
        try:
            meta = pq.read_metadata(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise CorruptFileError(
                f"{path} is not a readable Parquet file ({err}). The other shards are intact: "
                "rewrite this shard (rerun its round) or move the file out of the dataset."
            ) from None
        kv = {k.decode(): v.decode() for k, v in (meta.metadata or {}).items()}
        if kv.get("fld.table") != table:
            raise CorruptFileError(f"{path} holds table {kv.get('fld.table')!r}, expected {table!r}")
        if kv.get("fld.schema_version") != SCHEMA_VERSION:
            raise CorruptFileError(
                f"{path} was written with schema version {kv.get('fld.schema_version')!r}; "
                f"this fld reads version {SCHEMA_VERSION}"
            )
        return meta

    def verify(self) -> int:
        """Check every shard's footer and schema; returns the number of files checked."""
        count = 0
        for table in TABLES:
            for path in self.files(table):
                self.check_file(path, table)
                count += 1
        return count

    def read_file(self, path: Path, table: str, columns: list[str] | None = None) -> pa.Table:
        """One shard, checked first."""
        self.check_file(path, table)
        return pq.read_table(path, columns=columns, schema=schema_for(table))

    def read(self, table: str, round_id: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """A table (all rounds or one) as Arrow; an empty table with the schema when there is none."""
        schema = schema_for(table)
        parts = [self.read_file(path, table, columns) for path in self.files(table, round_id)]
        if not parts:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        return pa.concat_tables(parts)

    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """(width, height) of every readable image, by image id."""
        images = self.read("images", columns=["image_id", "width", "height", "status"])
        return {
            i: (w, h)
            for i, w, h, s in zip(*(images.column(c).to_pylist() for c in ("image_id", "width", "height", "status")))
            if s == "ok"
        }

    # -- writing --------------------------------------------------------------------------
    def writer(self, round_id: int) -> RoundWriter:
        return RoundWriter(self, round_id)


class RoundWriter:
    """The only way to write a round's shards: holds the round's lock while open."""

    def __init__(self, store: Store, round_id: int):
        if round_id < 0:
            raise ValueError(f"round must be >= 0, got {round_id}")
        self.store, self.round = store, round_id
        self.lock_path = store.root / "_locks" / f"round={round_id}.lock"
        self._fd: int | None = None

    def __enter__(self) -> RoundWriter:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RoundLockedError(
                f"round {self.round} of {self.store.root} is being written by another process "
                f"({holder}); wait for it to finish, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        self._clean_temp_files()
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _clean_temp_files(self) -> None:
        """Temp files of this round can only be left by a writer that died: we hold the lock."""
        for path in self.store.root.glob(f"*/round={self.round}/.*{TEMP_SUFFIX}"):
            log.warning("removing %s, left by a writer that did not finish", path)
            path.unlink(missing_ok=True)
        markers = self.store.root / "_markers" / f"round={self.round}"
        for path in markers.glob(f".*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)

    def _require_open(self) -> None:
        if self._fd is None:
            raise StoreError("RoundWriter used outside its `with` block (it must hold the round's lock)")

    def write(
        self,
        table: str,
        shard: int | str,
        data: pa.Table,
        image_sizes: Mapping[str, tuple[int, int]] | None = None,
    ) -> Path:
        """Validate ``data`` and write it as one shard, replacing that shard if it exists.

        Validation runs in a second thread while Parquet encodes into the temp file (both release
        the GIL); the temp file replaces the shard only once validation has passed.
        """
        self._require_open()
        path = self.store.shard_path(table, self.round, shard)
        source = f"shard {path.relative_to(self.store.root)}"
        rows = conform_or_raise(table, data, source)
        if "round" in rows.column_names and len(rows):
            rounds = set(rows.column("round").unique().to_pylist())
            if rounds != {self.round}:
                raise StoreError(
                    f"rows for {path.relative_to(self.store.root)} carry round(s) {sorted(rounds)}, "
                    f"but this writer holds round {self.round}"
                )
        with ThreadPoolExecutor(max_workers=1) as pool:
            checking = pool.submit(validate_table, table, rows, image_sizes, ISSUE_LIMIT)

            def encode_then_check(tmp: Path) -> None:
                pq.write_table(rows, tmp, compression=COMPRESSION)
                raise_if_invalid(checking.result(), source)

            write_atomic(path, encode_then_check)
        return path

    # -- completion markers (resume) ------------------------------------------------------
    def marker_path(self, shard: int | str) -> Path:
        return self.store.root / "_markers" / f"round={self.round}" / f"shard-{shard_label(shard)}.json"

    def mark_done(self, shard: int | str, stats: Mapping[str, object]) -> None:
        """Record that a shard is complete (every table written), with its stats."""
        self._require_open()
        body = json.dumps(dict(stats), sort_keys=True).encode()
        write_atomic(self.marker_path(shard), lambda tmp: tmp.write_bytes(body))

    def remove_unmarked(self, tables: Iterable[str], label: re.Pattern) -> list[Path]:
        """Remove this round's shards of ``tables`` whose name matches ``label`` but that have no
        completion marker: a writer that died left them before finishing the shard."""
        self._require_open()
        done = set(self.done_shards())
        removed = []
        for table in tables:
            for path in sorted(self.store.round_dir(table, self.round).glob("shard-*.parquet")):
                name = path.stem.removeprefix("shard-")
                if label.match(name) and name not in done:
                    log.warning("removing %s: its shard was never completed", path.relative_to(self.store.root))
                    path.unlink()
                    removed.append(path)
        return removed

    def done_shards(self) -> dict[str, dict]:
        """Stats of the shards already marked complete, by shard label."""
        folder = self.store.root / "_markers" / f"round={self.round}"
        return {p.stem.removeprefix("shard-"): json.loads(p.read_text()) for p in sorted(folder.glob("shard-*.json"))}
