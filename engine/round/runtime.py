"""The engine's Ray side (the only module that imports Ray): start or join a cluster, one actor
pool per specialist sized by the round config (workers, CPUs, GPUs per actor), and the shard
pipeline.

Each shard is decoded once into Ray's object store; specialists run stage by stage (a stage
needs only what earlier stages made), every pool working on several shards at once; the
filter pool merges and filters; the driver writes. A worker whose process dies is replaced by
the pipeline (see ``Pipeline``), so a killed worker costs time, not rows, and a crash is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlparse

from engine.reaper import watch
from engine.round.annotate import Annotated, Failure
from engine.round.config import RoundConfig
from engine.round.shards import Shard
from engine.round.workers import FilterWorker, SpecialistWorker, decode_shard
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
def loopback_node() -> Iterator[None]:
    """While a local Ray starts: one-machine mode, for the processes it spawns and for this one
    (whose copy of the switch was read when Ray was first imported)."""
    previous = os.environ.get(LOCAL_ONLY)
    os.environ[LOCAL_ONLY] = "0"
    from ray._private import ray_constants

    cluster_mode, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
        if previous is None:
            os.environ.pop(LOCAL_ONLY, None)
        else:
            os.environ[LOCAL_ONLY] = previous


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


class WorkerDeaths(RuntimeError):
    """Workers died more often than the round allows: it stops (a rerun resumes)."""


class Pipeline:
    """Actor pools for a round's specialists and filters, and shards pushed through them.

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
        # decoding reserves no CPU: it must never wait behind the actors that hold every core
        self.decode = ray.remote(num_cpus=0, max_retries=0)(decode_shard)
        asked = {spec.key: spec.resources() for spec in config.specialists}  # declared unless the config says
        total = sum(asked[s.key][0] * s.workers for s in config.specialists)
        scale = min(1.0, cluster_cpus() / total)  # fit every pool on a small machine
        self._kinds: dict[str, tuple] = {}  # pool -> (actor class, constructor arguments)
        for spec in config.specialists:
            cpus, gpus = asked[spec.key]
            actor = ray.remote(num_cpus=cpus * scale, num_gpus=gpus, max_restarts=0, max_task_retries=0)(SpecialistWorker)
            self._kinds[spec.key] = (actor, (spec.key, spec.name, spec.options, cpus))
        # Filtering is light next to the models and reserves no CPU, so it can never be the actor
        # left without a place when fractional reservations fragment across small nodes.
        filters = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(FilterWorker)
        self._kinds["filters"] = (filters, (config.filters,))
        self.pools: dict[str, list] = {spec.key: [self._start(spec.key, i) for i in range(spec.workers)]
                                       for spec in config.specialists}
        self.filters = [self._start("filters", i) for i in range(max(1, int(cluster_cpus() // 4)))]
        self.stages = config.stages()
        try:
            versions = ray.get([pool[0].version.remote() for pool in self.pools.values()], timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            asks = ", ".join(f"{s.key}: {s.workers} x {asked[s.key][0] * scale:.2f} CPU + {asked[s.key][1]} GPU"
                             for s in config.specialists)
            raise ClusterError(f"the specialists' workers did not start within {STARTUP_TIMEOUT_S:.0f} s: the cluster "
                               f"may lack what they reserve ({asks}); lower `cpus`/`workers` or add nodes") from None
        self._versions = dict(zip(self.pools, versions))
        log.info("round %d stages: %s", round_id, self.stages)

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
        for actor in [a for pool in self.pools.values() for a in pool] + self.filters:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as err:  # already gone, or the cluster went first
                log.debug("could not stop a worker: %s", err)

    def _start(self, pool: str, index: int):
        """A new actor of ``pool``, named after the round, the pool, its index and the deaths so far."""
        actor, arguments = self._kinds[pool]
        name = f"fld-round{self.round}-{pool}-{index}" + (f"-{self.deaths}" if self.deaths else "")
        return actor.options(name=name).remote(*arguments)

    def submit(self, shard: Shard):
        """The reference of one shard's filtered result."""
        decoded = self.decode.remote(list(shard.image_ids), list(shard.uris), self.round, shard.label)
        outputs: dict[str, object] = {}
        for stage in self.stages:
            earlier = list(outputs.values())
            for key in stage:
                pool = self.pools[key]
                actor = pool[shard.index % len(pool)]
                outputs[key] = actor.run.remote(decoded, self.round, shard.label, *earlier)
        worker = self.filters[shard.index % len(self.filters)]
        return worker.run.remote(decoded, self.round, shard.label, *outputs.values())

    def replace_dead(self, shards: list[Shard]) -> list[str]:
        """Replace every worker whose process is gone; the pools they were in. Raises WorkerDeaths
        past the round's budget."""
        ray = _ray()
        dead = []
        for key, pool in [*self.pools.items(), ("filters", self.filters)]:
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

    def run(self, shards: list[Shard]) -> Iterator[tuple[Shard, Annotated]]:
        """Push shards through, at most ``max_in_flight`` at a time; yields each as it completes."""
        ray, deaths = _ray(), process_deaths()
        queue, running = list(shards), {}
        suspects: list[Shard] = []  # shards whose worker died: each runs alone, one at a time
        solo = None  # the reference of the suspect running alone
        crashes: Counter[str] = Counter()  # image id -> deaths while it ran alone
        while queue or running or suspects:
            if suspects and not running:
                shard = suspects.pop(0)
                solo = self.submit(shard)
                running[solo] = shard
            while queue and not suspects and solo is None and len(running) < self.config.max_in_flight:
                shard = queue.pop(0)
                running[self.submit(shard)] = shard
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                shard, alone = running.pop(ref), ref == solo
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
                            yield shard, Annotated.failed([crashed(self.round, shard, dead, crashes, err)])
                    continue
                yield shard, result


def crashed(round_id: int, shard: Shard, dead: list[str], crashes: Counter, err: BaseException) -> Failure:
    """The failure of an image that killed its worker every time it ran alone."""
    image = shard.image_ids[0]
    where = "/".join(sorted(set(dead))) or "worker"
    return Failure.of(round_id, shard.label, image, where,
                      f"the {where} worker's process died on this image {crashes[image]} times when it ran alone "
                      f"({type(err).__name__}); skipped. Run it outside the round to see why (memory, a native crash)")
