"""Small valid rows of every table, for tests to start from and break one cell at a time."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from schemas import schema_for

PROV = {"round": 0, "specialist": "test", "specialist_version": "v1", "score": 0.9,
        "score_source": "model_probability"}
# A 4x3 mask (h=4, w=3) whose middle column is on: runs 4 off, 4 on, 4 off, written by pycocotools.
MASK = {"size": [4, 3], "counts": "444"}


def valid_row(table_name: str, /, **overrides) -> dict:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    base = {
        "images": {"image_id": "img0", "uri": "file:///x.png", "width": 3, "height": 4,
                   "format": "PNG", "split": "pool", "status": "ok", "error": None, "round": 0},
        "texts": {"image_id": "img0", "text_id": "t0", "granularity": "brief",
                  "text": "a red square", **PROV},
        "regions": {"image_id": "img0", "region_id": "r0", "kind": "object",
                    "box": [0.0, 0.0, 3.0, 4.0], "quad": None, "mask": MASK, "label": "square",
                    "members": None, **PROV},
        "triplets": {"image_id": "img0", "triplet_id": "p0", "text_id": "t0",
                     "text": "a red square", "phrase": "a red square", "span_start": 0,
                     "span_end": 12, "box": [0.0, 0.0, 3.0, 4.0], "mask": None,
                     "region_id": "r0", "phrase_score": 0.8, **PROV},
        "rejected": {"table": "regions", "row_id": "r9", "image_id": "img0", "round": 0,
                     "filter": "confidence", "reason": "score 0.1 < 0.3", "row": "{}"},
        "rounds": {"round": 0, "kind": "specialists", "config": "{}", "status": "completed",
                   "started_at": now, "finished_at": now},
        "metrics": {"round": 0, "split": "gold", "family": "region", "metric": "f1",
                    "value": 0.5, "source": "dataset"},
        "failures": {"round": 1, "shard": "00000", "image_id": "img0", "stage": "yolo",
                     "error": "RuntimeError: boom"},
        "reviews": {"round": 2, "image_id": "img0", "task_id": "7", "annotation_id": "1", "reviewer": "a@b",
                    "reviewed_at": now, "imported_at": now, "queue_round": 1, "source": "export.json sha256:00",
                    "answer": '{"boxes": [], "texts": {}}'},
    }[table_name]
    return {**base, **overrides}


def table_of(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema_for(table))


def one(table_name: str, /, **overrides) -> pa.Table:
    return table_of(table_name, [valid_row(table_name, **overrides)])
