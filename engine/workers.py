"""What runs inside the engine's workers, as plain Python (``engine.runtime`` wraps these classes
as Ray actors): decode a shard once, run one specialist over it in its batch size, filter it.

A specialist that raises on a batch is retried image by image; an image that still fails gets a
``failures`` row and the others go on."""

from __future__ import annotations

import logging
import os
import time

import pyarrow as pa

from engine.sources import load_rgb
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig, filter_annotations
from schemas import schema_for
from specialists.base import Batch
from specialists.registry import build

log = logging.getLogger(__name__)
ANNOTATIONS = ("texts", "regions", "triplets")


def limit_threads(cpus: float) -> None:
    """One worker, its share of the cores: no oversubscription when several models share a machine."""
    import torch

    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def failure(round_id: int, shard: str, image_id: str, stage: str, error: BaseException | str) -> dict:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"round": round_id, "shard": shard, "image_id": image_id, "stage": stage, "error": text[:2000]}


def decode_shard(image_ids: list[str], uris: list[str], round_id: int, shard: str) -> dict:
    """Pixels of a shard's images (decoded once for every specialist), and failures for the rest."""
    ids, pixels, failures = [], [], []
    for image_id, uri in zip(image_ids, uris):
        try:
            pixels.append(load_rgb(uri))
            ids.append(image_id)
        except Exception as err:  # the file may have changed since ingestion: any error is the image's
            failures.append(failure(round_id, shard, image_id, "decode", err))
    return {"image_ids": ids, "pixels": pixels, "failures": failures}


def _concat(name: str, tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t is not None and t.num_rows]
    return pa.concat_tables(tables) if tables else schema_for(name).empty_table()


class SpecialistWorker:
    """One specialist, loaded once per worker."""

    def __init__(self, key: str, name: str, options: dict, cpus: float = 1.0):
        limit_threads(cpus)
        self.name = key
        self.specialist = build(name, **options)
        self.specialist.load()

    def pid(self) -> int:
        return os.getpid()

    def describe(self) -> dict:
        s = self.specialist
        return {"produces": tuple(s.produces), "needs": tuple(s.needs), "role": s.role, "version": s.version,
                "batch_size": s.batch_size}

    def run(self, decoded: dict, round_id: int, shard: str, *earlier: dict) -> dict:
        """Annotations of this specialist for the shard; ``earlier`` are other specialists' outputs."""
        start = time.perf_counter()
        prompts = {t: _concat(t, [e[t] for e in earlier if t in e]) for t in ("texts", "regions")}
        ids, pixels = decoded["image_ids"], decoded["pixels"]
        out: dict[str, list[pa.Table]] = {t: [] for t in self.specialist.produces}
        failures = []
        size = self.specialist.batch_size
        for s in range(0, len(ids), size):
            chunk = (ids[s : s + size], pixels[s : s + size])
            try:
                results = [self.specialist(Batch(*chunk, prompts["regions"], prompts["texts"], round_id))]
            except Exception as err:
                log.warning("%s failed on a batch of %d images (%s); retrying one by one", self.name, len(chunk[0]), err)
                results = []
                for image_id, image in zip(*chunk):
                    try:
                        results.append(self.specialist(Batch([image_id], [image], prompts["regions"], prompts["texts"], round_id)))
                    except Exception as single:
                        failures.append(failure(round_id, shard, image_id, self.name, single))
            for result in results:
                for table, rows in result.items():
                    out.setdefault(table, []).append(rows)
        tables = {t: _concat(t, rows) for t, rows in out.items()}
        if self.specialist.role == "segmenter":
            tables = {"masks": tables.pop("regions")}  # masks for earlier boxes, not new regions
        return {**tables, "failures": failures, "seconds": {self.name: time.perf_counter() - start}}


def apply_masks(regions: pa.Table, masks: pa.Table) -> pa.Table:
    """Regions with the masks a segmenter made for them (matched by region id)."""
    if masks.num_rows == 0 or regions.num_rows == 0:
        return regions
    found = {r["region_id"]: r for r in masks.select(["region_id", "mask", "mask_score", "mask_specialist"]).to_pylist()}
    ids = regions.column("region_id").to_pylist()
    for name in ("mask", "mask_score", "mask_specialist"):
        current = regions.column(name).to_pylist()
        values = [found[i][name] if i in found and found[i]["mask"] is not None else current[k] for k, i in enumerate(ids)]
        regions = regions.set_column(regions.schema.get_field_index(name), name,
                                     pa.array(values, regions.schema.field(name).type))
    return regions


class FilterWorker:
    """Merges a shard's specialist outputs, attaches masks, and runs the filter pipeline."""

    def __init__(self, config: FilterConfig, cpus: float = 1.0):
        limit_threads(cpus)
        self.config = config
        self.parser = PhraseParser()

    def run(self, decoded: dict, round_id: int, shard: str, *outputs: dict) -> dict:
        start = time.perf_counter()
        tables = {t: _concat(t, [o.get(t) for o in outputs]) for t in ANNOTATIONS}
        for output in outputs:
            if "masks" in output:
                tables["regions"] = apply_masks(tables["regions"], output["masks"])
        sizes = {i: (int(p.shape[1]), int(p.shape[0])) for i, p in zip(decoded["image_ids"], decoded["pixels"])}
        pixels = dict(zip(decoded["image_ids"], decoded["pixels"]))
        filtered = filter_annotations(tables, sizes, self.parser, self.config, pixels=pixels)
        failures = decoded["failures"] + [f for o in outputs for f in o["failures"]]
        seconds = {k: v for o in outputs for k, v in o["seconds"].items()}
        seconds["filters"] = time.perf_counter() - start
        counts = {name: dict(c) for name, c in filtered.counts.items()}
        return {**filtered.kept, "rejected": filtered.rejected, "failures": failures, "seconds": seconds,
                "counts": counts, "raw": {t: tables[t].num_rows for t in ANNOTATIONS},
                "images": len(decoded["image_ids"])}


def stage_order(needs: dict[str, tuple[str, ...]], produces: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Specialists grouped in dependency order: a specialist runs once every other specialist that
    makes a table it needs has run (its own output does not count: it prompts with earlier ones)."""
    remaining, stages = dict(needs), []
    while remaining:
        ready = sorted(n for n in remaining
                       if not any(set(remaining[n]) & set(produces[m]) for m in remaining if m != n))
        if not ready:
            raise ValueError(f"specialists {sorted(remaining)} need each other's output")
        stages.append(ready)
        for n in ready:
            remaining.pop(n)
    return stages
