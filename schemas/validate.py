"""Validation of a batch of rows against its table's schema.

Checks run column-wise over Arrow and numpy (a write of millions of rows must stay fast); only
character spans and RLE strings are checked row by row. Every problem is reported with the
table, the row (0-based within the batch) and the column, so a user can find the bad row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.geometry import box_array
from schemas.masks import RleError, check_rle
from schemas.tables import (
    ANNOTATION_TABLES,
    GRANULARITIES,
    IMAGE_STATUSES,
    REGION_KINDS,
    ROUND_STATUSES,
    SCORE_SOURCES,
    SPLITS,
    schema_for,
)

ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("images", "status"): IMAGE_STATUSES,
    ("images", "split"): SPLITS,
    ("texts", "granularity"): GRANULARITIES,
    ("regions", "kind"): REGION_KINDS,
    ("rounds", "status"): ROUND_STATUSES,
    ("rejected", "table"): ANNOTATION_TABLES,
    **{(t, "score_source"): SCORE_SOURCES for t in ANNOTATION_TABLES},
}
IDS = {"images": "image_id", "texts": "text_id", "regions": "region_id", "triplets": "triplet_id"}
NON_EMPTY_TEXT = {
    "texts": ("text_id", "text"),
    "regions": ("region_id",),
    "triplets": ("triplet_id", "text", "phrase"),
    "rejected": ("row_id", "filter", "reason"),
    "images": ("image_id", "uri"),
    "metrics": ("family", "metric", "source"),
    "failures": ("shard", "image_id", "stage", "error"),
    "reviews": ("image_id", "task_id", "annotation_id", "reviewer", "source", "answer"),
}
LABELLED_KINDS = ("object", "ocr", "region_caption")
BOX_TOLERANCE = 0.5
"""Pixels a box may stick out of its image (rounding in a model's decoder) before it is an error."""


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in one cell of a batch."""

    table: str
    row: int | None
    column: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "all rows"
        return f"{self.table} {where}, column {self.column}: {self.message}"


class SchemaError(ValueError):
    """A batch that does not satisfy its table's schema; lists the first problems found."""

    def __init__(self, issues: list[ValidationIssue], source: str | None = None, shown: int = 10,
                 truncated: bool = False):
        self.issues = issues
        count = f"at least {len(issues)} invalid values" if truncated else f"{len(issues)} invalid value(s)"
        head = count + (f" in {source}" if source else "")
        lines = [str(i) for i in issues[:shown]]
        if len(issues) > shown:
            lines.append(f"... and {len(issues) - shown} more")
        super().__init__(head + ":\n  " + "\n  ".join(lines))


def _blank(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """True where a string is empty or only whitespace (null stays null)."""
    return pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))


def _rows(mask: pa.Array | np.ndarray) -> np.ndarray:
    """Indices where a boolean mask is true (nulls count as false)."""
    if isinstance(mask, (pa.Array, pa.ChunkedArray)):
        mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    return np.flatnonzero(mask)


class _Collector:
    def __init__(self, table: str, limit: int):
        self.table, self.limit, self.issues = table, limit, []

    @property
    def full(self) -> bool:
        return len(self.issues) >= self.limit

    def add(self, rows, column: str, message) -> None:
        """Record ``message`` (a string, or a function of the row index) for each row."""
        for row in rows:
            if self.full:
                return
            text = message(int(row)) if callable(message) else message
            self.issues.append(ValidationIssue(self.table, int(row), column, text))


def conform(table: str, data: pa.Table) -> tuple[pa.Table | None, list[ValidationIssue]]:
    """Select and cast ``data`` to the table's schema; issues name missing required columns and
    unexpected ones (a missing optional column is filled with nulls)."""
    schema = schema_for(table)
    for field in schema:  # an optional column left out is all nulls
        if field.nullable and field.name not in data.column_names:
            data = data.append_column(field.name, pa.nulls(data.num_rows, field.type))
    issues = [
        ValidationIssue(table, None, name, "missing column")
        for name in schema.names
        if name not in data.column_names
    ]
    issues += [
        ValidationIssue(table, None, name, f"unexpected column (allowed: {', '.join(schema.names)})")
        for name in data.column_names
        if name not in schema.names
    ]
    if issues:
        return None, issues
    columns = []
    for field in schema:
        column = data.column(field.name)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            issues.append(
                ValidationIssue(table, None, field.name, f"cannot be read as {field.type}: {err}")
            )
    if issues:
        return None, issues
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata()).replace_schema_metadata(
        schema.metadata
    ), []


def _check_boxes(c: _Collector, data: pa.Table, sizes: Mapping[str, tuple[int, int]] | None):
    boxes = box_array(data.column("box"))
    valid = ~np.isnan(boxes).all(axis=1)
    finite = np.isfinite(boxes).all(axis=1)
    c.add(np.flatnonzero(valid & ~finite), "box", lambda r: f"non-finite value in {boxes[r].tolist()}")
    ok = valid & finite
    c.add(
        np.flatnonzero(ok & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))),
        "box",
        lambda r: f"x2 <= x1 or y2 <= y1 in {boxes[r].tolist()}",
    )
    c.add(np.flatnonzero(ok & (boxes < -BOX_TOLERANCE).any(axis=1)), "box",
          lambda r: f"negative coordinate in {boxes[r].tolist()}")
    if sizes is None:
        return
    ids = data.column("image_id").to_pylist()
    missing = [i for i, image in enumerate(ids) if image not in sizes]
    c.add(missing, "image_id", lambda r: f"image {ids[r]!r} is not in the images table")
    wh = np.array([sizes.get(image, (np.inf, np.inf)) for image in ids], np.float64).reshape(-1, 2)
    outside = ok & (
        (boxes[:, 2] > wh[:, 0] + BOX_TOLERANCE) | (boxes[:, 3] > wh[:, 1] + BOX_TOLERANCE)
    )
    c.add(np.flatnonzero(outside), "box",
          lambda r: f"{boxes[r].tolist()} lies outside the {int(wh[r, 0])}x{int(wh[r, 1])} image")


def _check_masks(c: _Collector, data: pa.Table, sizes: Mapping[str, tuple[int, int]] | None):
    masks = data.column("mask")
    if masks.null_count == len(masks):
        return
    ids = data.column("image_id").to_pylist()
    for row, mask in enumerate(masks.to_pylist()):
        if mask is None or c.full:
            continue
        try:
            check_rle(mask["size"] or [], mask["counts"] or "")
        except RleError as err:
            c.add([row], "mask", f"bad RLE: {err}")
            continue
        if sizes is not None and ids[row] in sizes:
            w, h = sizes[ids[row]]
            if list(mask["size"]) != [h, w]:
                c.add([row], "mask", f"mask size {mask['size']} is not the image's [{h}, {w}]")


def _check_scores(c: _Collector, data: pa.Table):
    score = data.column("score")
    source = data.column("score_source")
    values = pc.fill_null(score.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    has = pc.is_valid(score).to_numpy(zero_copy_only=False)
    c.add(np.flatnonzero(has & np.isnan(values)), "score", "score is NaN")
    bounded = pc.is_in(source, pa.array(["model_probability", "human", "ground_truth"]))
    bounded = pc.fill_null(bounded, False).to_numpy(zero_copy_only=False)
    c.add(np.flatnonzero(has & bounded & ((values < 0) | (values > 1))), "score",
          lambda r: f"score {values[r]} is outside [0, 1]")
    counted = pc.fill_null(pc.equal(source, "agreement_count"), False).to_numpy(zero_copy_only=False)
    c.add(np.flatnonzero(has & counted & ((values < 1) | (values != np.round(values)))), "score",
          lambda r: f"an agreement count must be a whole number >= 1, got {values[r]}")
    c.add(np.flatnonzero(counted & ~has), "score", "an agreement count needs a score")
    none = pc.fill_null(pc.equal(source, "none"), False).to_numpy(zero_copy_only=False)
    c.add(np.flatnonzero(none & has), "score", "score_source is 'none' but a score is given")


def _check_spans(c: _Collector, data: pa.Table):
    texts, phrases = data.column("text").to_pylist(), data.column("phrase").to_pylist()
    starts, ends = data.column("span_start").to_pylist(), data.column("span_end").to_pylist()
    for row, (text, phrase, a, b) in enumerate(zip(texts, phrases, starts, ends)):
        if None in (text, phrase, a, b) or c.full:
            continue
        if not 0 <= a < b <= len(text):
            c.add([row], "span_start", f"span [{a}, {b}) is not inside the text of length {len(text)}")
        elif text[a:b] != phrase:
            c.add([row], "phrase", f"text[{a}:{b}] is {text[a:b]!r}, not the phrase {phrase!r}")


def validate_table(
    table: str,
    data: pa.Table,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    max_issues: int = 100,
) -> list[ValidationIssue]:
    """All problems (up to ``max_issues``) of ``data`` as rows of ``table``.

    ``image_sizes`` maps image id to (width, height); with it, boxes and masks are also checked
    against their image.
    """
    conformed, issues = conform(table, data)
    if conformed is None:
        return issues
    data = conformed
    c = _Collector(table, max_issues)
    for field in data.schema:
        if not field.nullable:
            c.add(_rows(data.column(field.name).is_null()), field.name, "value is missing (null)")
    for column in NON_EMPTY_TEXT.get(table, ()):
        c.add(_rows(_blank(data.column(column))), column, "text is empty")
    for (name, column), allowed in ENUMS.items():
        if name == table:
            bad = pc.invert(pc.is_in(data.column(column), pa.array(allowed)))
            bad = pc.and_(bad, pc.is_valid(data.column(column)))
            values = data.column(column).to_pylist() if pc.any(bad).as_py() else []
            c.add(_rows(bad), column, lambda r, a=allowed, v=values: f"{v[r]!r} is not one of {', '.join(a)}")
    id_column = IDS.get(table)
    if id_column is not None and table != "images":
        ids = data.column(id_column)
        if len(pc.unique(ids)) != len(ids):
            counts = pc.value_counts(ids)
            dupes = {d["values"] for d in counts.to_pylist() if d["counts"] > 1}
            c.add(_rows(pc.is_in(ids, pa.array(list(dupes), pa.string()))), id_column,
                  "id appears more than once in the batch")
    if table in ANNOTATION_TABLES:
        _check_scores(c, data)
        negative = pc.less(data.column("round"), 0)
        c.add(_rows(negative), "round", "round is negative")
    if table in ("regions", "triplets"):
        _check_boxes(c, data, image_sizes)
        _check_masks(c, data, image_sizes)
    if table == "regions":
        labelled = pc.is_in(data.column("kind"), pa.array(LABELLED_KINDS))
        blank = pc.or_kleene(pc.is_null(data.column("label")), _blank(data.column("label")))
        c.add(_rows(pc.and_(labelled, blank)), "label", "this kind of region needs a label or text")
    if table == "triplets":
        _check_spans(c, data)
        phrase = pc.fill_null(data.column("phrase_score").cast(pa.float64()), 0.5).to_numpy(zero_copy_only=False)
        c.add(np.flatnonzero(np.isnan(phrase) | (phrase < 0) | (phrase > 1)), "phrase_score",
              lambda r: f"phrase_score {phrase[r]} is not within [0, 1]")
    if table == "images":
        _check_images(c, data)
    if table == "rounds":
        early = pc.less(data.column("finished_at"), data.column("started_at"))
        c.add(_rows(early), "finished_at", "finished before it started")
    if table == "metrics":
        value = pc.is_nan(pc.fill_null(data.column("value"), 0.0))
        c.add(_rows(value), "value", "value is NaN (use null for a metric that cannot be measured)")
    return c.issues


def _check_images(c: _Collector, data: pa.Table):
    ok = pc.equal(data.column("status"), "ok")
    for column in ("width", "height"):
        bad = pc.and_(ok, pc.or_kleene(pc.is_null(data.column(column)),
                                       pc.less_equal(data.column(column), 0)))
        c.add(_rows(bad), column, "an image with status ok needs a size > 0")
    error = pc.equal(data.column("status"), "error")
    no_reason = pc.or_kleene(pc.is_null(data.column("error")), _blank(data.column("error")))
    c.add(_rows(pc.and_(error, no_reason)), "error", "an image with status error needs its reason")


ISSUE_LIMIT = 100


def raise_if_invalid(issues: list[ValidationIssue], source: str | None = None) -> None:
    if issues:
        raise SchemaError(issues, source, truncated=len(issues) >= ISSUE_LIMIT)


def conform_or_raise(table: str, data: pa.Table, source: str | None = None) -> pa.Table:
    """``data`` cast to the table's schema (columns and types only; values are not checked)."""
    conformed, issues = conform(table, data)
    raise_if_invalid(issues, source)
    return conformed


def check_table(
    table: str,
    data: pa.Table,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    source: str | None = None,
) -> pa.Table:
    """``data`` cast to the table's schema, or SchemaError listing what is wrong and where."""
    conformed = conform_or_raise(table, data, source)
    raise_if_invalid(validate_table(table, conformed, image_sizes, max_issues=ISSUE_LIMIT), source)
    return conformed
