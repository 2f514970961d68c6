"""Reaching Ray: an unreachable cluster is a clear error, quickly, and nothing is written."""

from __future__ import annotations

import socket
import time

import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import Store
from engine.round.config import RoundConfig, SpecialistSpec
from engine.round.run import run_round
from engine.round.runtime import ClusterError, Runtime, check_reachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["not-an-address", "ray://nohost"])
def test_malformed_addresses(address):
    with pytest.raises(ClusterError, match="is not host:port"):
        check_reachable(address)


def test_unreachable_cluster_fails_fast_and_writes_nothing(small_world, tmp_path):
    store = Store(tmp_path / "ds", create=True)
    ingest(str(small_world.images("gold")), store, IngestConfig(split="gold"))
    address = f"127.0.0.1:{free_port()}"
    config = RoundConfig(specialists=(SpecialistSpec("rapidocr"),), ray_address=address)
    start = time.perf_counter()
    with pytest.raises(ClusterError, match=f"could not reach the Ray cluster at {address}"):
        run_round(store, 1, config)
    assert time.perf_counter() - start < 30
    assert not store.files("rounds", 1) and not store.files("regions", 1) and not store.files("failures", 1)
    with pytest.raises(ClusterError):
        with Runtime(address):
            pass
