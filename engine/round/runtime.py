"""The engine's Ray side (the only module that imports Ray): start or join a cluster, the round's
workers laid out as the config's placement says, and the shard pipeline.

``fused`` (the default on CPUs): each worker annotates whole shards, every specialist and the
filters in one process, one worker per CPU. ``pools`` (the default when a specialist reserves a
GPU): each shard is decoded once into Ray's object store and specialists run stage by stage (a
stage needs only what earlier stages made) in one pool per specialist, every pool working on
several shards at once; the filter pool merges and filters. Either way the driver writes. A
worker whose process dies is replaced by the pipeline (see ``Pipeline``), so a killed worker
costs time, not rows, and a crash is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from urllib.parse import urlparse

from engine.reaper import watch
from engine.round.annotate import Annotated, Failure
from engine.round.config import RoundConfig
from engine.round.shards import Shard
from engine.round.workers import DecodeWorker, FilterWorker, RoundWorker, SpecialistWorker
from engine.settings import home

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """Ray could not be started or reached."""


def _ray():
    import ray

    return ray


LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for one-machine mode. On Linux, Ray replaces a node address of 127.0.0.1 by the
machine's routable address (``services.resolve_ip_for_localhost``), so ``_node_ip_address`` alone
leaves the GCS, the raylet, the workers and the agents listening on the network; with this switch
off (read when Ray is imported) the node's address stays loopback and so do its servers."""


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """``values`` in this process's environment (inherited by what it starts), then as before."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


NO_PROXY_FOR_PROBES = "http://127.0.0.1:9"
"""Where Ray's dashboard process sends HTTP: loopback's discard port, which refuses at once."""
LOOPBACK = "127.0.0.1,localhost"
"""What it still reaches directly (its GCS, over gRPC, which reads the same variables)."""


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """While a local Ray starts: one-machine mode, for the processes it spawns and for this one
    (whose copy of the switch was read when Ray was first imported); and a dashboard process that
    probes no cloud. Ray starts that process even without a dashboard (its usage-stats module),
    and it asks the cloud metadata servers (169.254.169.254, metadata.google.internal) which
    cloud it is on, usage stats off or not; started with its HTTP sent to a loopback port that
    refuses, it looks up and connects to nothing off the machine (``requests`` lets the proxy
    resolve names). Only that process gets the setting: the workers' S3 and other HTTP is untouched."""
    from ray._private import ray_constants, services

    start_api_server = services.start_api_server

    def without_cloud_probes(*args, **kwargs):
        with environment(HTTP_PROXY=NO_PROXY_FOR_PROBES, http_proxy=NO_PROXY_FOR_PROBES,
                         NO_PROXY=LOOPBACK, no_proxy=LOOPBACK):
            return start_api_server(*args, **kwargs)

    cluster_mode, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    services.start_api_server = without_cloud_probes
    try:
        with environment(**{LOCAL_ONLY: "0"}):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
        services.start_api_server = start_api_server


CONNECT_TIMEOUT_S = 5.0
STARTUP_TIMEOUT_S = 600.0
"""How long the specialists' workers may take to be placed and load their weights."""
PING_TIMEOUT_S = 5.0
"""How long a worker may take to answer whether its process is alive (busy ones answer later)."""


def check_reachable(address: str) -> str | None:
    """For a ``host:port`` (or ``ray://host:port``) address, fail fast when nothing listens there
    (ray.init itself retries for minutes); returns the host."""
    if address == "auto":
        return None
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise ClusterError(f"Ray address {address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ClusterError(f"could not reach the Ray cluster at {address}: {err}. Is `ray start --head` running "
                           "there, and is the port open? Nothing was written.") from None
    return parsed.hostname


class Runtime:
    """A Ray session: local (embedded) unless ``address`` names a cluster."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.started_here = False

    def __enter__(self) -> Runtime:
        ray = _ray()
        if ray.is_initialized():
            return self
        if self.address:
            check_reachable(self.address)
        try:
            if self.address:  # the driver takes the node IP the cluster registered, whatever it is
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            else:  # the embedded Ray listens on loopback only, and stops when this process ends
                watch()
                temp = home() / "ray"
                temp.mkdir(parents=True, exist_ok=True)
                with loopback_node():
                    ray.init(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False,
                             logging_level=logging.WARNING, log_to_driver=False, _temp_dir=str(temp),
                             _node_ip_address="127.0.0.1")
        except Exception as err:  # ray raises ConnectionError, RuntimeError, ValueError ...
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise ClusterError(f"could not start or reach {where}: {type(err).__name__}: {err}") from None
        self.started_here = True
        return self

    def __exit__(self, *exc) -> None:
        if self.started_here:
            _ray().shutdown()



def process_deaths() -> tuple[type[BaseException], ...]:
    """The errors that mean a worker's process died."""
    ray = _ray()
    return (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError)


def cluster_cpus() -> float:
    return float(_ray().cluster_resources().get("CPU", 1.0))


def node_cpus() -> list[float]:
    """The CPUs of each live node that has any."""
    return [n["Resources"]["CPU"] for n in _ray().nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]


def fits_on_nodes(asks: list[float], nodes: list[float]) -> float:
    """The factor that scales every actor's CPU ask so that they spread evenly over the nodes fit
    on the smallest (three 1-CPU actors on two 1-CPU nodes: 0.5; scaled by the cluster's total
    alone, 0.67 each, the third found no node and the round waited for it until it timed out)."""
    if not asks or not nodes:
        return 1.0
    per_node = -(-len(asks) // len(nodes))
    return min(nodes) / (per_node * max(asks))


class WorkerDeaths(RuntimeError):
    """Workers died more often than the round allows: it stops (a rerun resumes)."""


class Pipeline:
    """The round's workers (see ``PLACEMENTS``), and shards pushed through them.

    ``fused``: one pool of ``RoundWorker``s, each annotating whole shards. ``pools``: a decode pool,
    one pool per specialist and a filter pool, each shard's calls chained stage to stage. Each
    shard goes to the least busy worker of each pool. Every worker is started, and its weights
    loaded, before the round's clock starts.

    Ray neither restarts a dead actor nor retries its call here: the pipeline does, so that a
    crash is bounded and lands on the image that caused it. A shard whose worker died is set
    aside; set-aside shards run one at a time (nothing else in flight, so a death is theirs), a
    shard of several images split into single images. An image that kills a worker
    ``crash_tries`` times alone gets a ``failures`` row and the round goes on; a dead worker is
    replaced, at most ``max_worker_deaths`` times a round.
    """

    def __init__(self, config: RoundConfig, round_id: int):
        ray = _ray()
        self.config, self.round = config, round_id
        self.deaths = 0
        self.placement = config.resolved_placement()
        self.stages = config.stages()
        cpus = cluster_cpus()
        self._kinds: dict[str, tuple] = {}  # pool -> (actor class, constructor arguments)
        sizes = self._fused(config, cpus) if self.placement == "fused" else self._pools(config, cpus)
        self.pools: dict[str, list] = {pool: [self._start(pool, i) for i in range(n)] for pool, n in sizes.items()}
        self.busy: dict[str, list[int]] = {pool: [0] * n for pool, n in sizes.items()}
        self.in_flight = config.max_in_flight or max(4, 2 * max(sizes.values()))
        try:
            versions = ray.get([a.versions.remote() for pool in self.pools.values() for a in pool],
                               timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(f"the round's workers did not start within {STARTUP_TIMEOUT_S:.0f} s: the cluster may "
                               f"lack what they reserve ({self._asks}); lower `cpus`/`workers` or add nodes") from None
        self._versions = {k: v for found in versions for k, v in found.items()}
        log.info("round %d: %s placement, %s; stages %s", round_id, self.placement, self._asks, self.stages)

    def _fused(self, config: RoundConfig, cpus: float) -> dict[str, int]:
        """One pool of workers that each hold every specialist (and reserve every GPU they ask)."""
        ray = _ray()
        gpus = sum(spec.resources()[1] for spec in config.specialists)
        n = config.fused_workers or max(1, int(cpus))
        if gpus and not config.fused_workers:  # no more workers than the GPUs hold
            n = max(1, min(n, int(float(ray.cluster_resources().get("GPU", 0.0)) // gpus)))
        share = cpus / n
        by_key = {spec.key: spec for spec in config.specialists}
        layout = [[(key, by_key[key].name, by_key[key].options) for key in stage] for stage in self.stages]
        actor = ray.remote(num_cpus=share, num_gpus=gpus, max_restarts=0, max_task_retries=0)(RoundWorker)
        self._kinds["fused"] = (actor, (layout, config.filters, share))
        self._asks = f"fused: {n} x {share:.2f} CPU + {gpus} GPU"
        return {"fused": n}

    def _pools(self, config: RoundConfig, cpus: float) -> dict[str, int]:
        """A pool per specialist, scaled down together to fit a small cluster; decode and filter pools."""
        ray = _ray()
        asked = {spec.key: spec.resources() for spec in config.specialists}  # declared unless the config says
        # never above the cluster's total share either: the smallest node holds at most total / nodes
        scale = min(1.0, fits_on_nodes([asked[s.key][0] for s in config.specialists for _ in range(s.workers)],
                                       node_cpus()))
        for spec in config.specialists:
            cpu, gpu = asked[spec.key]
            actor = ray.remote(num_cpus=cpu * scale, num_gpus=gpu, max_restarts=0, max_task_retries=0)(SpecialistWorker)
            self._kinds[spec.key] = (actor, (spec.key, spec.name, spec.options, cpu))
        # Decoding and filtering are light next to the models and reserve no CPU, so neither can be
        # the actor left without a place when fractional reservations fragment across small nodes.
        light = max(1, int(cpus // 4))
        self._kinds["decode"] = (ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(DecodeWorker), ())
        self._kinds["filters"] = (ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(FilterWorker),
                                  (config.filters,))
        self._asks = ", ".join(f"{s.key}: {s.workers} x {asked[s.key][0] * scale:.2f} CPU + {asked[s.key][1]} GPU"
                               for s in config.specialists)
        return {"decode": light, **{spec.key: spec.workers for spec in config.specialists}, "filters": light}

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker now (not when the last reference goes, which an exception's traceback
        can delay past a rerun that needs the same actor names)."""
        ray = _ray()
        for actor in [a for pool in self.pools.values() for a in pool]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as err:  # already gone, or the cluster went first
                log.debug("could not stop a worker: %s", err)

    def _start(self, pool: str, index: int):
        """A new actor of ``pool``, named after the round, the pool, its index and the deaths so far."""
        actor, arguments = self._kinds[pool]
        name = f"fld-round{self.round}-{pool}-{index}" + (f"-{self.deaths}" if self.deaths else "")
        return actor.options(name=name).remote(*arguments)

    def _take(self, pool: str, used: list[tuple[str, int]]):
        """The least busy worker of ``pool`` (noted in ``used``, to be released with the shard)."""
        load = self.busy[pool]
        index = load.index(min(load))
        load[index] += 1
        used.append((pool, index))
        return self.pools[pool][index]

    def _release(self, used: list[tuple[str, int]]) -> None:
        for pool, index in used:
            self.busy[pool][index] -= 1

    def submit(self, shard: Shard) -> tuple[object, list[tuple[str, int]]]:
        """The reference of one shard's filtered result, and the workers it was given to."""
        used: list[tuple[str, int]] = []
        args = (list(shard.image_ids), list(shard.uris), self.round, shard.label)
        if self.placement == "fused":
            return self._take("fused", used).run.remote(*args), used
        decoded = self._take("decode", used).run.remote(*args)
        outputs: dict[str, object] = {}
        for stage in self.stages:
            earlier = list(outputs.values())
            for key in stage:
                outputs[key] = self._take(key, used).run.remote(decoded, self.round, shard.label, *earlier)
        return self._take("filters", used).run.remote(decoded, self.round, shard.label, *outputs.values()), used

    def replace_dead(self, shards: list[Shard]) -> list[str]:
        """Replace every worker whose process is gone; the pools they were in. Raises WorkerDeaths
        past the round's budget."""
        ray = _ray()
        dead = []
        for key, pool in self.pools.items():
            for i, actor in enumerate(pool):
                try:  # a dead actor answers at once with an error; a busy one is left to its work
                    ray.get(actor.pid.remote(), timeout=PING_TIMEOUT_S)
                except ray.exceptions.GetTimeoutError:
                    continue
                except ray.exceptions.RayActorError:
                    dead.append(key)
                    self.deaths += 1
                    if self.deaths > self.config.max_worker_deaths:
                        images = ", ".join(i for s in shards for i in s.image_ids)
                        raise WorkerDeaths(
                            f"round {self.round}: worker processes died {self.deaths} times, over max_worker_deaths="
                            f"{self.config.max_worker_deaths} (the last in pool {key!r} on images {images}). The shards "
                            "written so far are kept and a rerun resumes; check the workers' memory and the logs "
                            f"under {home() / 'ray'}") from None
                    pool[i] = self._start(key, i)
        if dead:
            log.warning("round %d: replaced dead workers of %s (%d deaths so far)", self.round, ", ".join(dead), self.deaths)
        return dead

    def run(self, shards: Iterable[Shard]) -> Iterator[tuple[Shard, Annotated]]:
        """Push shards through, at most ``in_flight`` at a time (taken from ``shards`` as room
        frees up); yields each as it completes."""
        ray, deaths = _ray(), process_deaths()
        pending, running = iter(shards), {}
        upcoming = next(pending, None)  # drawn one at a time: the plan reads its files as the round reaches them
        suspects: list[Shard] = []  # shards whose worker died: each runs alone, one at a time
        solo = None  # the reference of the suspect running alone
        crashes: Counter[str] = Counter()  # image id -> deaths while it ran alone
        while upcoming is not None or running or suspects:
            if suspects and not running:
                shard = suspects.pop(0)
                solo, used = self.submit(shard)
                running[solo] = (shard, used)
            while upcoming is not None and not suspects and solo is None and len(running) < self.in_flight:
                ref, used = self.submit(upcoming)
                running[ref] = (upcoming, used)
                upcoming = next(pending, None)
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                (shard, used), alone = running.pop(ref), ref == solo
                self._release(used)
                solo = None if alone else solo
                try:
                    result = ray.get(ref)
                except deaths as err:
                    dead = self.replace_dead([shard])
                    if not alone:  # others were in flight: the death may be theirs
                        suspects.append(shard)
                    elif len(shard.image_ids) > 1:
                        suspects.extend(shard.split())
                    else:
                        crashes[shard.image_ids[0]] += 1
                        if crashes[shard.image_ids[0]] < self.config.crash_tries:
                            suspects.append(shard)
                        else:
                            yield shard, Annotated.failed([crashed(self.round, shard, dead, crashes, err, self.stages)])
                    continue
                yield shard, result


def crashed(round_id: int, shard: Shard, dead: list[str], crashes: Counter, err: BaseException,
            stages: list[list[str]]) -> Failure:
    """The failure of an image that killed its worker every time it ran alone."""
    image = shard.image_ids[0]
    where = "/".join(sorted(set(dead))) or "worker"
    held = f" (it runs {', '.join(k for stage in stages for k in stage)} and the filters)" if "fused" in dead else ""
    return Failure.of(round_id, shard.label, image, where,
                      f"the {where} worker's process{held} died on this image {crashes[image]} times when it ran "
                      f"alone ({type(err).__name__}); skipped. Run it outside the round to see why (memory, a native "
                      "crash), or with placement = \"pools\" to learn which specialist it kills")
