"""The classes a round's Ray actors hold (``engine.round.runtime`` wraps them). A ``RoundWorker``
runs a shard's whole annotation path (``engine.round.annotate.annotate``, the function the gold
measurement calls); in the ``pools`` placement a ``SpecialistWorker`` runs one specialist's half
and a ``FilterWorker`` the filters' half. Either way a round and a gold measurement run the same
code."""

from __future__ import annotations

import os
from collections.abc import Sequence

from engine.dataset.sources import load_rgb
from engine.round.annotate import Annotated, Decoded, StageOutput, annotate, decode, finish, run_specialist
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig
from specialists.base import Specialist
from specialists.registry import build


def limit_threads(cpus: float) -> int:
    """One worker, its share of the cores: no oversubscription when several workers share a
    machine. Returns the thread count (for runtimes that take their own, see ``Specialist.threads``)."""
    import torch

    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def loaded(name: str, options: dict, threads: int) -> Specialist:
    """A specialist built from its registry name and options, given ``threads``, with weights loaded."""
    specialist = build(name, **options)
    specialist.threads = threads
    specialist.load()
    return specialist


def decode_shard(image_ids: list[str], uris: list[str], round_id: int, shard: str) -> Decoded:
    """A shard's pixels, decoded once for every specialist."""
    return decode(image_ids, uris, load_rgb, round_id, shard)


class DecodeWorker:
    """Decodes shards for the specialist pools (an actor started with the round, so no worker
    process is spawned, and no module imported, inside the timed round)."""

    def pid(self) -> int:
        return os.getpid()

    def versions(self) -> dict[str, str]:
        return {}

    def run(self, image_ids: list[str], uris: list[str], round_id: int, shard: str) -> Decoded:
        return decode_shard(image_ids, uris, round_id, shard)


class RoundWorker:
    """Every specialist of the round and the filters in one process: decode, annotate and filter
    whole shards, handing nothing to another process on the way."""

    def __init__(self, stages: Sequence[Sequence[tuple[str, str, dict]]], config: FilterConfig, cpus: float = 1.0):
        threads = limit_threads(cpus)
        self.stages = [[(key, loaded(name, options, threads)) for key, name, options in stage] for stage in stages]
        self.config = config
        self.parser = PhraseParser()

    def pid(self) -> int:
        return os.getpid()

    def versions(self) -> dict[str, str]:
        return {key: specialist.version for stage in self.stages for key, specialist in stage}

    def run(self, image_ids: list[str], uris: list[str], round_id: int, shard: str) -> Annotated:
        decoded = decode_shard(image_ids, uris, round_id, shard)
        return annotate(decoded, self.stages, self.config, self.parser, round_id, shard)


class SpecialistWorker:
    """One specialist, loaded once per worker."""

    def __init__(self, key: str, name: str, options: dict, cpus: float = 1.0):
        self.key = key
        self.specialist = loaded(name, options, limit_threads(cpus))

    def pid(self) -> int:
        return os.getpid()

    def versions(self) -> dict[str, str]:
        return {self.key: self.specialist.version}

    def run(self, decoded: Decoded, round_id: int, shard: str, *earlier: StageOutput) -> StageOutput:
        """This specialist's annotations of the shard; ``earlier`` are earlier stages' outputs."""
        return run_specialist(self.specialist, self.key, decoded, earlier, round_id, shard)


class FilterWorker:
    """Merges a shard's specialist outputs, attaches masks, and runs the filter pipeline."""

    def __init__(self, config: FilterConfig, cpus: float = 1.0):
        limit_threads(cpus)
        self.config = config
        self.parser = PhraseParser()

    def pid(self) -> int:
        return os.getpid()

    def versions(self) -> dict[str, str]:
        return {}

    def run(self, decoded: Decoded, round_id: int, shard: str, *outputs: StageOutput) -> Annotated:
        return finish(decoded, outputs, self.config, self.parser)
