"""What a 1M- and a 100M-image round cost on the driver side, from measured per-unit costs: the
shard plan (time and memory per image), writing one shard's tables and marker, reading the
markers back on resume, and opening the dataset for ``fld query`` (every shard's footer is
checked) and a query over it. Measured at ``--images`` planned images and ``--shards`` written
shards, then projected linearly (the projection assumes the per-unit costs stay flat; the
measured sizes say how far they were checked).

    python bench/scale.py [--images 1000000] [--shards 400] [--shard-size 64]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from engine.dataset.query import run_query  # noqa: E402
from engine.dataset.store import Store  # noqa: E402
from engine.round.annotate import Annotated  # noqa: E402
from engine.round.run import finished_images, write_shard  # noqa: E402
from engine.round.shards import plan_shards  # noqa: E402
from schemas import schema_for  # noqa: E402

REGIONS_PER_IMAGE = 5
"""About what a round keeps per image on the embedded world (objects, OCR lines)."""


def plan_cost(root: str, shard_size: int) -> tuple[float, float]:
    """Seconds to plan a round over ``root``, and the MiB of Arrow memory the plan holds."""
    store = Store(Path(root))
    held = pa.total_allocated_bytes()
    clock = time.perf_counter()
    plan = plan_shards(store, ("pool",), shard_size)
    seconds = time.perf_counter() - clock
    assert len(plan) > 0
    return seconds, (pa.total_allocated_bytes() - held) / 2**20  # what the plan holds (Arrow), while it lives


def images_table(n: int, start: int = 0) -> pa.Table:
    ids = [f"{i:016x}" for i in range(start, start + n)]
    return pa.table({"image_id": ids, "uri": [f"s3://a-bucket/some/prefix/{i}.jpg" for i in ids],
                     "width": pa.array(np.full(n, 640, np.int32)), "height": pa.array(np.full(n, 480, np.int32)),
                     "format": ["JPEG"] * n, "split": ["pool"] * n, "status": ["ok"] * n, "error": [None] * n,
                     "round": pa.array(np.zeros(n, np.int32))}, schema=schema_for("images"))


def shard_result(image_ids: tuple[str, ...], round_id: int) -> Annotated:
    """A shard's kept regions (``REGIONS_PER_IMAGE`` boxes each), as a round writes them."""
    rows = [{"image_id": i, "region_id": f"{i}-{k}", "kind": "object", "box": [10.0 * k, 10.0, 10.0 * k + 40, 60.0],
             "label": "sign", "specialist": "yolo", "specialist_version": "abc", "round": round_id, "score": 0.9,
             "score_source": "model_probability"} for i in image_ids for k in range(REGIONS_PER_IMAGE)]
    regions = pa.Table.from_pylist(rows, schema=schema_for("regions"))
    empty = {t: schema_for(t).empty_table() for t in ("texts", "triplets")}
    return Annotated({**empty, "regions": regions}, schema_for("rejected").empty_table(), [], {"yolo": 1.0}, {},
                     {"texts": 0, "regions": len(rows), "triplets": 0}, len(image_ids))


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--images", type=int, default=1_000_000)
    args.add_argument("--shards", type=int, default=400)
    args.add_argument("--shard-size", type=int, default=64)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory(prefix="fld-bench-scale-") as tmp:
        store = Store(Path(tmp) / "ds", create=True)
        with store.writer(0) as writer:
            for k, start in enumerate(range(0, opts.images, 50_000)):
                writer.write("images", f"ingest-{k:05d}", images_table(min(50_000, opts.images - start), start))
        with multiprocessing.get_context("spawn").Pool(1) as child:  # a fresh process: its own peak
            plan_s, plan_mib = child.apply(plan_cost, (str(store.root), opts.shard_size))
        shards = plan_shards(store, ("pool",), opts.shard_size)
        clock = time.perf_counter()
        with store.writer(1) as writer:
            for shard in itertools.islice(shards, opts.shards):
                write_shard(writer, shard, shard_result(shard.image_ids, 1), "fingerprint")
        write_s = (time.perf_counter() - clock) / opts.shards
        clock = time.perf_counter()
        with store.writer(1) as writer:
            done = finished_images(writer.done_shards(), 1, "fingerprint")
        resume_s = (time.perf_counter() - clock) / opts.shards
        assert len(done) == opts.shards * opts.shard_size
        files = len(store.files("regions")) + sum(len(store.files(t)) for t in ("texts", "triplets", "rejected", "failures"))
        size = sum(p.stat().st_size for p in Path(store.root).rglob("*.parquet") if "round=1" in str(p)) / opts.shards
        clock = time.perf_counter()
        result = run_query(store, "SELECT label, count(*) AS n FROM regions GROUP BY label")
        query_s = (time.perf_counter() - clock) / files
        assert result.rows and result.rows[0][1] == opts.shards * opts.shard_size * REGIONS_PER_IMAGE
    per = {"plan_s_per_image": plan_s / opts.images, "plan_mib_per_image": plan_mib / opts.images,
           "plan_held_mib": plan_mib, "write_s_per_shard": write_s, "resume_s_per_shard": resume_s, "files_per_shard": files / opts.shards,
           "bytes_per_shard": size, "query_s_per_file": query_s}
    rows = []
    for n in (1_000_000, 100_000_000):
        shards_n = -(-n // opts.shard_size)
        rows.append({"images": n, "shards": shards_n, "parquet_files": int(shards_n * per["files_per_shard"]),
                     "marker_files": shards_n, "files_per_folder": shards_n,
                     "parquet_gib": round(shards_n * size / 2**30, 2),
                     "plan_s": round(n * per["plan_s_per_image"], 1),
                     "plan_driver_gib": round(n * per["plan_mib_per_image"] / 1024, 2),
                     "driver_writes_h": round(shards_n * write_s / 3600, 2),
                     "resume_read_markers_min": round(shards_n * resume_s / 60, 1),
                     "fld_query_open_and_run_min": round(shards_n * per["files_per_shard"] * query_s / 60, 1)})
    report("scale", rows, {"measured": {"images_planned": opts.images, "shards_written": opts.shards,
                                        "shard_size": opts.shard_size, "regions_per_image": REGIONS_PER_IMAGE,
                                        **{k: float(f"{v:.4g}") for k, v in per.items()}}})


if __name__ == "__main__":
    main()
