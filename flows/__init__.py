"""Prefect flows that orchestrate rounds; they pass paths and small results, never data."""
