"""The same round on Ray Data's streaming executor, for ``bench/engine.py`` to measure beside the
engine's own ``Pipeline``: shards become rows of a Ray Data dataset and each step is a
``map_batches`` over an actor pool. ``RayDataPipeline`` has the ``Pipeline`` interface, so
``run_round`` drives it unchanged (same shard plan, atomic shard writes, markers and summary).

Two layouts, as the engine has:
- ``fused``: one ``map_batches`` whose actors run ``RoundWorker`` (decode, every specialist, the
  filters), one actor per CPU;
- ``pools``: decode -> one ``map_batches`` per specialist in stage order (an actor pool each,
  CPUs shared out as the engine's ``pools`` placement does) -> the filters.

Rows carry the shard's decoded pixels and each stage's output pickled (protocol 5) in a binary
column: Ray Data blocks are Arrow tables, and a shard's images differ in size.

Not the product: the measurements in docs/PERFORMANCE.md chose the engine's own actor pipeline.
Bounded failure (crash isolation) is not reproduced here.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Iterator

import numpy as np

from engine.round.annotate import Annotated, run_specialist
from engine.round.config import RoundConfig
from engine.round.shards import Shard
from engine.round.workers import FilterWorker, RoundWorker, SpecialistWorker, decode_shard


def _dump(value: object) -> bytes:
    return pickle.dumps(value, protocol=5)


class _Fused:
    def __init__(self, layout, filters, cpus: float):
        self.worker = RoundWorker(layout, filters, cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        results = [self.worker.run(list(ids), list(uris), int(r), str(label))
                   for ids, uris, r, label in zip(batch["ids"], batch["uris"], batch["round"], batch["label"])]
        return {"index": batch["index"], "result": [_dump(x) for x in results]}


class _Decode:
    """An actor, as the engine's decode pool: a zero-CPU task would have no bound on how many
    run at once (each its own worker process: that exhausted 24 GiB at 400 images)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        decoded = [decode_shard(list(ids), list(uris), int(r), str(label))
                   for ids, uris, r, label in zip(batch["ids"], batch["uris"], batch["round"], batch["label"])]
        return {"index": batch["index"], "round": batch["round"], "label": batch["label"],
                "decoded": [_dump(d) for d in decoded], "outputs": [_dump([]) for _ in decoded]}


class _Stage:
    def __init__(self, key: str, name: str, options: dict, cpus: float):
        self.worker = SpecialistWorker(key, name, options, cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        outputs = []
        for decoded, earlier, r, label in zip(batch["decoded"], batch["outputs"], batch["round"], batch["label"]):
            earlier = pickle.loads(earlier)
            out = run_specialist(self.worker.specialist, self.worker.key, pickle.loads(decoded), earlier, int(r), str(label))
            outputs.append(_dump(earlier + [out]))
        return {**batch, "outputs": outputs}


class _Filters:
    def __init__(self, filters):
        self.worker = FilterWorker(filters)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        results = [self.worker.run(pickle.loads(d), int(r), str(label), *pickle.loads(o))
                   for d, o, r, label in zip(batch["decoded"], batch["outputs"], batch["round"], batch["label"])]
        return {"index": batch["index"], "result": [_dump(x) for x in results]}


class RayDataPipeline:
    """``Pipeline``'s interface over Ray Data (``layout``: ``fused`` or ``pools``)."""

    layout = "fused"

    def __init__(self, config: RoundConfig, round_id: int):
        import ray

        self.config, self.round = config, round_id
        self.stages = config.stages()
        self.cpus = float(ray.cluster_resources().get("CPU", 1.0))

    def __enter__(self) -> RayDataPipeline:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, shards: Iterable[Shard]) -> Iterator[tuple[Shard, Annotated]]:
        import ray

        shards = list(shards)
        from ray.data import ActorPoolStrategy

        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        items = [{"index": k, "ids": list(s.image_ids), "uris": list(s.uris), "round": self.round, "label": s.label}
                 for k, s in enumerate(shards)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        by_key = {spec.key: spec for spec in self.config.specialists}
        if self.layout == "fused":
            n = max(1, int(self.cpus))
            layout = [[(k, by_key[k].name, by_key[k].options) for k in stage] for stage in self.stages]
            ds = ds.map_batches(_Fused, batch_size=1, compute=ActorPoolStrategy(size=n), num_cpus=self.cpus / n,
                                fn_constructor_args=(layout, self.config.filters, self.cpus / n))
        else:
            ds = ds.map_batches(_Decode, batch_size=1, compute=ActorPoolStrategy(size=1), num_cpus=0)
            share = self.cpus / sum(by_key[k].workers for stage in self.stages for k in stage)
            for stage in self.stages:
                for key in stage:
                    spec = by_key[key]
                    ds = ds.map_batches(_Stage, batch_size=1, compute=ActorPoolStrategy(size=spec.workers), num_cpus=share,
                                        fn_constructor_args=(key, spec.name, spec.options, 1.0))
            ds = ds.map_batches(_Filters, batch_size=1, compute=ActorPoolStrategy(size=1), num_cpus=0,
                                fn_constructor_args=(self.config.filters,))
        for row in ds.iter_rows():
            yield shards[int(row["index"])], pickle.loads(row["result"])


class RayDataPools(RayDataPipeline):
    layout = "pools"
