"""A specialist that kills its own process on chosen images (a native crash, an out-of-memory
kill), to try the round's bounded failure: ``tests.crashing_specialist:build``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pyarrow as pa

from specialists.base import Batch
from tests.toy_specialist import ToyDetector


class CrashingDetector(ToyDetector):
    name = "crashing"

    def __init__(self, box: Sequence[float], label: str, die_on: Sequence[str] = ()):
        super().__init__(box, label)
        self.die_on = set(die_on)

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        if self.die_on & set(batch.image_ids):
            os._exit(137)  # no exception, no cleanup: the process is gone
        return super().predict(batch)


def build(box: Sequence[float], label: str, die_on: Sequence[str] = ()) -> CrashingDetector:
    return CrashingDetector(box, label, die_on)
