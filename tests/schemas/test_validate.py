"""Every table's validation: a valid row passes, each kind of bad cell is named by row and column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pycocotools.mask as mask_utils
import pytest

from schemas import SCHEMA_VERSION, TABLES, SchemaError, check_table, validate_table
from schemas.masks import RleError, check_rle
from tests.rows import one, table_of, valid_row

SIZES = {"img0": (3, 4)}


@pytest.mark.parametrize("table", list(TABLES))
def test_valid_row_passes_and_carries_version(table):
    out = check_table(table, one(table), SIZES)
    assert out.schema.metadata[b"fld.schema_version"] == SCHEMA_VERSION.encode()
    assert out.schema.metadata[b"fld.table"] == table.encode()


@pytest.mark.parametrize(
    "table, overrides, column, fragment",
    [
        ("images", {"status": "broken"}, "status", "not one of ok, error"),
        ("images", {"split": "train"}, "split", "not one of"),
        ("images", {"width": 0}, "width", "size > 0"),
        ("images", {"status": "error", "error": None, "width": None}, "error", "needs its reason"),
        ("images", {"uri": " "}, "uri", "empty"),
        ("texts", {"granularity": "long"}, "granularity", "not one of brief, detailed, more_detailed"),
        ("texts", {"text": "   "}, "text", "empty"),
        ("texts", {"score": float("nan")}, "score", "NaN"),
        ("texts", {"score": 1.5}, "score", "outside [0, 1]"),
        ("texts", {"score": -0.1}, "score", "outside [0, 1]"),
        ("texts", {"score_source": "guess"}, "score_source", "not one of"),
        ("texts", {"score_source": "none"}, "score", "'none' but a score"),
        ("texts", {"score_source": "agreement_count", "score": 1.5}, "score", "whole number"),
        ("texts", {"round": -1}, "round", "negative"),
        ("texts", {"specialist": None}, "specialist", "missing"),
        ("regions", {"kind": "blob"}, "kind", "not one of object, ocr, region_caption, proposal"),
        ("regions", {"box": [2.0, 0.0, 1.0, 4.0]}, "box", "x2 <= x1"),
        ("regions", {"box": [0.0, 3.0, 3.0, 3.0]}, "box", "y2 <= y1"),
        ("regions", {"box": [0.0, 0.0, 30.0, 4.0]}, "box", "outside the 3x4 image"),
        ("regions", {"box": [-5.0, 0.0, 3.0, 4.0]}, "box", "negative"),
        ("regions", {"box": [0.0, 0.0, float("nan"), 4.0]}, "box", "non-finite"),
        ("regions", {"image_id": "other"}, "image_id", "not in the images table"),
        ("regions", {"label": ""}, "label", "needs a label"),
        ("regions", {"label": None}, "label", "needs a label"),
        ("regions", {"mask": {"size": [4, 3], "counts": "44"}}, "mask", "cover 8 pixels"),
        ("regions", {"mask": {"size": [4, 3], "counts": "4 4"}}, "mask", "not valid RLE"),
        ("regions", {"mask": {"size": [0, 3], "counts": ""}}, "mask", "both > 0"),
        ("regions", {"mask": {"size": [3, 4], "counts": "444"}}, "mask", "not the image's [4, 3]"),
        ("triplets", {"span_end": 40}, "span_start", "not inside the text"),
        ("triplets", {"span_start": 2}, "phrase", "not the phrase"),
        ("triplets", {"phrase": ""}, "phrase", "empty"),
        ("triplets", {"box": [1.0, 1.0, 1.0, 2.0]}, "box", "x2 <= x1"),
        ("triplets", {"phrase_score": 1.2}, "phrase_score", "not within [0, 1]"),
        ("triplets", {"phrase_score": float("nan")}, "phrase_score", "not within [0, 1]"),
        ("rejected", {"table": "images"}, "table", "not one of texts, regions, triplets"),
        ("rejected", {"reason": ""}, "reason", "empty"),
        ("rounds", {"status": "paused"}, "status", "not one of running, completed, failed"),
        ("metrics", {"value": float("nan")}, "value", "NaN"),
    ],
)
def test_bad_cell_is_named(table, overrides, column, fragment):
    issues = validate_table(table, one(table, **overrides), SIZES)
    assert any(i.column == column and fragment in i.message and i.row == 0 for i in issues), issues
    with pytest.raises(SchemaError, match=f"{table} row 0, column {column}"):
        check_table(table, one(table, **overrides), SIZES)


def test_rounds_finished_before_start():
    row = valid_row("rounds")
    row["finished_at"] = row["started_at"].replace(year=2025)
    issues = validate_table("rounds", table_of("rounds", [row]))
    assert [(i.column, i.row) for i in issues] == [("finished_at", 0)]


def test_row_index_points_at_the_bad_row_among_good_ones():
    rows = [valid_row("regions", region_id=f"r{i}") for i in range(5)]
    rows[3]["box"] = [5.0, 5.0, 1.0, 1.0]
    issues = validate_table("regions", table_of("regions", rows))
    assert [(i.row, i.column) for i in issues] == [(3, "box")]


def test_duplicate_ids_in_a_batch():
    rows = [valid_row("texts"), valid_row("texts")]
    issues = validate_table("texts", table_of("texts", rows))
    assert {(i.row, i.column) for i in issues} == {(0, "text_id"), (1, "text_id")}


def test_missing_and_unexpected_columns_are_named():
    data = one("texts").drop_columns(["granularity"]).append_column("extra", pa.array([1]))
    issues = validate_table("texts", data)
    assert {(i.column, i.message.split(" (")[0]) for i in issues} == {
        ("granularity", "missing column"), ("extra", "unexpected column")}


def test_wrong_type_is_named():
    data = one("images").set_column(2, "width", pa.array(["wide"]))
    issues = validate_table("images", data)
    assert issues[0].column == "width" and "cannot be read as int32" in issues[0].message


def test_unknown_table():
    with pytest.raises(KeyError, match="known tables: images"):
        validate_table("boxes", one("images"))


def test_empty_batch_is_valid():
    assert validate_table("regions", table_of("regions", [])) == []


def test_issue_count_is_bounded_and_error_message_summarises():
    rows = [valid_row("texts", text_id=f"t{i}", text="") for i in range(500)]
    issues = validate_table("texts", table_of("texts", rows), max_issues=20)
    assert len(issues) == 20
    with pytest.raises(SchemaError, match="(?s)at least 100 invalid values.*and 90 more"):
        check_table("texts", table_of("texts", rows))


def test_sliced_box_column_reads_the_right_rows():
    rows = [valid_row("regions", region_id=f"r{i}", box=[0.0, 0.0, 1.0 + i, 1.0]) for i in range(4)]
    rows[2]["box"] = [3.0, 0.0, 1.0, 1.0]
    data = table_of("regions", rows).slice(1, 3)
    assert [(i.row, i.column) for i in validate_table("regions", data)] == [(1, "box")]


@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (17, 31), (64, 48)])
def test_rle_reader_agrees_with_pycocotools(shape):
    rng = np.random.default_rng(sum(shape))
    mask = np.asfortranarray(rng.random(shape) > 0.6, dtype=np.uint8)
    rle = mask_utils.encode(mask)
    check_rle(rle["size"], rle["counts"].decode())
    with pytest.raises(RleError):
        check_rle([shape[0] + 1, shape[1]], rle["counts"].decode())


def test_missing_optional_columns_are_nulls():
    data = one("regions").drop_columns(["quad", "mask_score", "members"])
    out = check_table("regions", data, SIZES)
    assert out.column("quad").null_count == 1 and out.schema.names == TABLES["regions"].names


def test_fingerprints_are_the_same_in_every_process():
    """Sets are hashed in sorted order: with Python's hash seed, their order differs between processes."""
    import subprocess
    import sys

    script = "from schemas.hashing import fingerprint; print(fingerprint({'words': frozenset(['a', 'the', 'which', 'some'])}))"
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in range(4)}
    assert len(runs) == 1
