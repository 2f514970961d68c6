"""The classes a round's Ray actors hold (``engine.round.runtime`` wraps them): each runs one half
of the annotation path (``engine.round.annotate``), so a round and a gold measurement run the same
code."""

from __future__ import annotations

import os

from engine.dataset.sources import load_rgb
from engine.round.annotate import Annotated, Decoded, StageOutput, decode, finish, run_specialist
from filters.phrases import PhraseParser
from filters.pipeline import FilterConfig
from specialists.registry import build


def limit_threads(cpus: float) -> None:
    """One worker, its share of the cores: no oversubscription when several models share a machine."""
    import torch

    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def decode_shard(image_ids: list[str], uris: list[str], round_id: int, shard: str) -> Decoded:
    """A shard's pixels, decoded once for every specialist (a Ray task)."""
    return decode(image_ids, uris, load_rgb, round_id, shard)


class SpecialistWorker:
    """One specialist, loaded once per worker."""

    def __init__(self, key: str, name: str, options: dict, cpus: float = 1.0):
        limit_threads(cpus)
        self.key = key
        self.specialist = build(name, **options)
        self.specialist.load()

    def pid(self) -> int:
        return os.getpid()

    def version(self) -> str:
        return self.specialist.version

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

    def run(self, decoded: Decoded, round_id: int, shard: str, *outputs: StageOutput) -> Annotated:
        return finish(decoded, outputs, self.config, self.parser)
