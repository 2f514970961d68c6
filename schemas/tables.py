"""Arrow schemas of the dataset's tables.

Every schema is written out field by field (never inferred) and carries its version in the
schema metadata, so a Parquet file always says which contract it was written under.
Annotation tables (texts, regions, triplets) share the provenance columns.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "2"

GRANULARITIES = ("brief", "detailed", "more_detailed")
REGION_KINDS = ("object", "ocr", "region_caption", "proposal")
SCORE_SOURCES = ("model_probability", "agreement_count", "human", "ground_truth", "none")
IMAGE_STATUSES = ("ok", "error")
ROUND_STATUSES = ("running", "completed", "failed")
SPLITS = ("seed", "pool", "gold", "unlabelled", "seed-gold")

BOX = pa.list_(pa.float32(), 4)
"""A box in pixel coordinates, x1 y1 x2 y2."""
QUAD = pa.list_(pa.float32(), 8)
"""An OCR quadrilateral, four x y corners clockwise from top-left."""
RLE = pa.struct([pa.field("size", pa.list_(pa.int32(), 2)), pa.field("counts", pa.string())])
"""A mask as COCO RLE: size is [height, width], counts the compressed string."""

PROVENANCE = [
    pa.field("round", pa.int32(), nullable=False),
    pa.field("specialist", pa.string(), nullable=False),
    pa.field("specialist_version", pa.string(), nullable=False),
    pa.field("score", pa.float32()),
    pa.field("score_source", pa.string(), nullable=False),
]
"""Who made an annotation, in which round, and how sure it was (and how that was measured)."""

MEMBER = pa.struct(
    [
        pa.field("specialist", pa.string()),
        pa.field("specialist_version", pa.string()),
        pa.field("region_id", pa.string()),
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
    ]
)
"""One specialist's region inside a fused region."""


def _schema(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={"fld.table": name, "fld.schema_version": SCHEMA_VERSION})


IMAGES = _schema(
    "images",
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("split", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("round", pa.int32(), nullable=False),
    ],
)

TEXTS = _schema(
    "texts",
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("text_id", pa.string(), nullable=False),
        pa.field("granularity", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        *PROVENANCE,
    ],
)

REGIONS = _schema(
    "regions",
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("region_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("box", BOX, nullable=False),
        pa.field("quad", QUAD),
        pa.field("mask", RLE),
        pa.field("mask_score", pa.float32()),
        pa.field("mask_specialist", pa.string()),
        pa.field("label", pa.string()),
        pa.field("members", pa.list_(MEMBER)),
        *PROVENANCE,
    ],
)
"""A mask may come from another specialist than the box (a segmenter prompted with it):
``mask_specialist`` (name@version) and ``mask_score`` (e.g. SAM's predicted IoU) say which."""

TRIPLETS = _schema(
    "triplets",
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("triplet_id", pa.string(), nullable=False),
        pa.field("text_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("phrase", pa.string(), nullable=False),
        pa.field("span_start", pa.int32(), nullable=False),
        pa.field("span_end", pa.int32(), nullable=False),
        pa.field("box", BOX, nullable=False),
        pa.field("mask", RLE),
        pa.field("region_id", pa.string()),
        pa.field("phrase_score", pa.float32()),
        *PROVENANCE,
    ],
)
"""``score`` is the box's confidence; ``phrase_score`` the grounder's confidence in the phrase."""

REJECTED = _schema(
    "rejected",
    [
        pa.field("table", pa.string(), nullable=False),
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("filter", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("row", pa.string(), nullable=False),
    ],
)
"""Every annotation a filter dropped, kept whole (``row`` is the row as JSON) with the reason."""

ROUNDS = _schema(
    "rounds",
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("config", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    ],
)

FAILURES = _schema(
    "failures",
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ],
)
"""An image a round could not annotate (at decoding or in one specialist), and why: the rest go on."""

METRICS = _schema(
    "metrics",
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("family", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("low", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("images", pa.int32()),
        pa.field("unit_images", pa.list_(pa.string())),
        pa.field("unit_num", pa.list_(pa.float64())),
        pa.field("unit_den", pa.list_(pa.float64())),
    ],
)
"""Measured quality: ``source`` names what was measured (the dataset, or one specialist), ``split``
where (``gold``: the target domain's gold; ``seed-gold``: the seed domain's). A gold metric that is
a ratio of per-image sums keeps them (``unit_*``, by image id) with its 95% bootstrap interval
(``low``..``high``, over the ``images`` that count): ``engine.evaluation.noise``."""

REVIEWS = _schema(
    "reviews",
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("annotation_id", pa.string(), nullable=False),
        pa.field("reviewer", pa.string(), nullable=False),
        pa.field("reviewed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("imported_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("queue_round", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
    ],
)
"""One image a person reviewed (a Label Studio annotation), imported into review round ``round``:
who and when, the round whose queue it came from, the export file (name and SHA-256) and the
answer (the image's boxes, OCR text and descriptions, as JSON) from which the human rows are made."""

TABLES: dict[str, pa.Schema] = {
    "images": IMAGES,
    "texts": TEXTS,
    "regions": REGIONS,
    "triplets": TRIPLETS,
    "rejected": REJECTED,
    "rounds": ROUNDS,
    "metrics": METRICS,
    "failures": FAILURES,
    "reviews": REVIEWS,
}
ANNOTATION_TABLES = ("texts", "regions", "triplets")


def schema_for(table: str) -> pa.Schema:
    """The schema of ``table``; a clear error names the known tables otherwise."""
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; known tables: {', '.join(TABLES)}") from None
