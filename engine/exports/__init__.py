"""Exports of a dataset's rounds to the formats users train with: COCO, Florence-2 JSONL,
a Hugging Face ``datasets`` Parquet layout, and YOLO labels. One module per format."""
