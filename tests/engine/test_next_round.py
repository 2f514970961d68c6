"""Where a scheduled run goes on from, and how `fld rounds` shows a round nobody is running."""

from __future__ import annotations

import datetime as dt

from engine.dataset.rounds import next_round, rounds_table
from engine.dataset.store import Store
from engine.round.run import record_round


def record(store: Store, round_id: int, status: str) -> None:
    with store.writer(round_id) as writer:
        record_round(writer, "specialists", "{}", status, dt.datetime.now(dt.timezone.utc))


def statuses(store: Store) -> dict[int, str]:
    table = rounds_table(store)
    return {row[0]: row[table.columns.index("status")] for row in table.rows}


def test_a_schedule_goes_on_after_the_last_completed_round_and_resumes_an_unfinished_one(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    assert next_round(store) == 1
    record(store, 1, "completed")
    assert next_round(store) == 2
    record(store, 2, "failed")
    assert next_round(store) == 2  # finish it first
    record(store, 2, "completed")
    assert next_round(store) == 3


def test_a_round_left_running_shows_as_interrupted_unless_someone_holds_it(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    record(store, 1, "completed")
    record(store, 2, "running")  # its writer is gone: the lock is free
    assert statuses(store) == {1: "completed", 2: "interrupted"}
    with store.writer(2):
        assert statuses(store) == {1: "completed", 2: "running"}
    assert next_round(store) == 2
