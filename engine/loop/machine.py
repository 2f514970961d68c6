"""The machine a model is trained on, as its manifest and a zoo card record it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine(device: str) -> dict:
    """The machine a model was trained on, as a card records it."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = None
    if device.startswith("cuda"):
        import torch

        gpu = torch.cuda.get_device_name(0)
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "device": device}
