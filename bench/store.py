"""Store throughput: region rows written per second (validation included), and the latency of
``fld stats`` and a count-by-kind query as the dataset grows to 5M and 10M rows.

    python bench/store.py [--rows 10000000] [--shard-rows 1000000]

Goals (issue 2): writes >= 1M rows/s; stats over 10M rows under 2 s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import settings  # noqa: E402
from bench.common import report  # noqa: E402
from engine.dataset.query import run_query  # noqa: E402
from engine.dataset.stats import dataset_stats  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from schemas import schema_for  # noqa: E402

LABELS = np.array(["house", "tree", "car", "flower", "sign", "circle", "square", "star"])
KINDS = np.array(["object", "object", "object", "ocr", "region_caption", "proposal"])


def region_shard(rng: np.random.Generator, start: int, n: int, images: int) -> pa.Table:
    """``n`` valid region rows spread over ``images`` images of 640x480."""
    image = rng.integers(0, images, n)
    xy = rng.uniform(0, 400, (n, 2)).astype(np.float32)
    wh = rng.uniform(4, 200, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1).reshape(-1)
    kind = KINDS[rng.integers(0, len(KINDS), n)]
    label = np.where(kind == "proposal", None, LABELS[rng.integers(0, len(LABELS), n)])
    ids = pa.array(np.char.add("r", np.arange(start, start + n).astype(str)))
    image_ids = pa.array(np.char.add("img", image.astype(str)))
    return pa.table(
        {
            "image_id": image_ids,
            "region_id": ids,
            "kind": pa.array(kind),
            "box": pa.FixedSizeListArray.from_arrays(pa.array(boxes), 4),
            "quad": pa.nulls(n, schema_for("regions").field("quad").type),
            "mask": pa.nulls(n, schema_for("regions").field("mask").type),
            "label": pa.array(label, pa.string()),
            "members": pa.nulls(n, schema_for("regions").field("members").type),
            "round": pa.array(np.zeros(n, np.int32)),
            "specialist": pa.array(np.full(n, "yolo")),
            "specialist_version": pa.array(np.full(n, "bench")),
            "score": pa.array(rng.uniform(0, 1, n).astype(np.float32)),
            "score_source": pa.array(np.full(n, "model_probability")),
        }
    )


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = max(args.rows // 5, 1)
    rows, write_seconds, written = [], 0.0, 0
    checkpoints = sorted({min(5_000_000, args.rows), args.rows})
    with tempfile.TemporaryDirectory(prefix="fld-bench-store-") as tmp:
        store = Store(Path(tmp) / "ds", create=True)
        with store.writer(0) as writer:
            shard = 0
            while written < args.rows:
                n = min(args.shard_rows, args.rows - written)
                data = region_shard(rng, written, n, images)  # generation is not timed
                start = time.perf_counter()
                writer.write("regions", shard, data)
                write_seconds += time.perf_counter() - start
                written += n
                shard += 1
                if written in checkpoints:
                    stats_s = best_of(lambda: dataset_stats(store))
                    count_s = best_of(lambda: run_query(store, "SELECT kind, count(*) FROM regions GROUP BY kind"))
                    rows.append({
                        "rows": written,
                        "write_rows_per_s": round(written / write_seconds),
                        "stats_s": round(stats_s, 3),
                        "count_by_kind_s": round(count_s, 3),
                        "bytes_on_disk": sum(p.stat().st_size for p in store.files("regions")),
                    })
    report("store", rows, {"goals": {"write_rows_per_s": ">= 1000000", "stats_s_at_10M": "< 2"}})


if __name__ == "__main__":
    settings.apply()
    main()
