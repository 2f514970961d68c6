"""Specialist models that propose annotations (detector, segmenter, OCR, captioner, grounder)."""
