"""The contract: explicit, versioned Arrow schemas for every table of an fld dataset."""

from schemas.tables import (
    ANNOTATION_TABLES,
    GRANULARITIES,
    IMAGE_STATUSES,
    REGION_KINDS,
    ROUND_STATUSES,
    SCHEMA_VERSION,
    SCORE_SOURCES,
    SPLITS,
    TABLES,
    schema_for,
)
from schemas.validate import SchemaError, ValidationIssue, check_table, validate_table

__all__ = [
    "ANNOTATION_TABLES",
    "GRANULARITIES",
    "IMAGE_STATUSES",
    "REGION_KINDS",
    "ROUND_STATUSES",
    "SCHEMA_VERSION",
    "SCORE_SOURCES",
    "SPLITS",
    "TABLES",
    "SchemaError",
    "ValidationIssue",
    "check_table",
    "schema_for",
    "validate_table",
]
