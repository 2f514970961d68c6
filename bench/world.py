"""World throughput: images drawn per second (with their truth written), and images ingested
per second (read, hashed, fully decoded), on this machine's cores.

    python bench/world.py [--images 400]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import settings  # noqa: E402
from bench.common import report  # noqa: E402
from engine.dataset.ingest import IngestConfig, ingest  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.world.config import WorldConfig  # noqa: E402
from engine.world.make import make_world  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fld-bench-world-") as tmp:
        for workers in (1, os.cpu_count() or 1):
            start = time.perf_counter()
            world = make_world(WorldConfig(images=args.images, seed=1), Path(tmp) / f"w{workers}", workers=workers)
            seconds = time.perf_counter() - start
            rows.append({"step": "world make", "workers": workers, "images": args.images,
                         "seconds": round(seconds, 2), "images_per_s": round(args.images / seconds, 1)})
        for workers in (1, os.cpu_count() or 1):
            store = Store(Path(tmp) / f"ds{workers}", create=True)
            start = time.perf_counter()
            total = 0
            for split in ("seed", "pool", "gold"):
                summary = ingest(str(world.images(split)), store, IngestConfig(split=split, workers=workers))
                total += summary.ok
            seconds = time.perf_counter() - start
            rows.append({"step": "ingest", "workers": workers, "images": total,
                         "seconds": round(seconds, 2), "images_per_s": round(total / seconds, 1)})
    report("world", rows)


if __name__ == "__main__":
    settings.apply()
    main()
