"""The engine's Ray side (the only module that imports Ray): start or join a cluster, one actor
pool per specialist sized by the round config (workers, CPUs, GPUs per actor), and the shard
pipeline.

Each shard is decoded once into Ray's object store; specialists run stage by stage (a stage
needs only what earlier stages made), every pool working on several shards at once; the
filter pool merges and filters; the driver writes. Actors restart when their process dies
and Ray retries the call, so a killed worker costs time, not rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from engine.round.annotate import Annotated
from engine.round.config import RoundConfig
from engine.round.shards import Shard
from engine.reaper import watch
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



def cluster_cpus() -> float:
    return float(_ray().cluster_resources().get("CPU", 1.0))


class Pipeline:
    """Actor pools for a round's specialists and filters, and shards pushed through them."""

    def __init__(self, config: RoundConfig, round_id: int):
        ray = _ray()
        self.config, self.round = config, round_id
        # decoding reserves no CPU: it must never wait behind the actors that hold every core
        self.decode = ray.remote(num_cpus=0, max_retries=3)(decode_shard)
        asked = {spec.key: spec.resources() for spec in config.specialists}  # declared unless the config says
        total = sum(asked[s.key][0] * s.workers for s in config.specialists)
        scale = min(1.0, cluster_cpus() / total)  # fit every pool on a small machine
        self.pools: dict[str, list] = {}
        for spec in config.specialists:
            cpus, gpus = asked[spec.key]
            actor = ray.remote(num_cpus=cpus * scale, num_gpus=gpus, max_restarts=-1,
                               max_task_retries=-1)(SpecialistWorker)
            self.pools[spec.key] = [actor.options(name=f"fld-round{round_id}-{spec.key}-{i}")
                                    .remote(spec.key, spec.name, spec.options, cpus) for i in range(spec.workers)]
        # Filtering is light next to the models and reserves no CPU, so it can never be the actor
        # left without a place when fractional reservations fragment across small nodes.
        filters = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(FilterWorker)
        self.filters = [filters.remote(config.filters) for _ in range(max(1, int(cluster_cpus() // 4)))]
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

    def run(self, shards: list[Shard]) -> Iterator[tuple[Shard, Annotated]]:
        """Push shards through, at most ``max_in_flight`` at a time; yields each as it completes."""
        ray = _ray()
        queue, running = list(shards), {}
        while queue or running:
            while queue and len(running) < self.config.max_in_flight:
                shard = queue.pop(0)
                running[self.submit(shard)] = shard
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                shard = running.pop(ref)
                yield shard, ray.get(ref)
