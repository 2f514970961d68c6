"""The same round on a real multi-process Ray cluster on this machine (a head and a second node;
Ray registers them under the machine's own address, whatever --node-ip-address says),
and the engine scheduled on a real `prefect server start`: the topology of docker-compose.yml,
without Docker. Slow (clusters and servers take their time to start): `make test-slow`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import Store

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree_matching(text: str) -> None:
    """Stop only the processes this test started (their command lines name our temp folder)."""
    out = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True).stdout.split()
    for pid in out:
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def loopback_cluster(monkeypatch):
    temp = tempfile.mkdtemp(prefix="fldray", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={port}", f"--temp-dir={temp}",
                        "--include-dashboard=false", *common], check=True, env=env, capture_output=True, timeout=180)
        subprocess.run([str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}", *common],
                       check=True, env=env, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        kill_tree_matching(temp)
        shutil.rmtree(temp, ignore_errors=True)


def test_round_on_a_two_node_loopback_cluster(loopback_cluster, small_world, tmp_path):
    import ray

    from engine.round.config import RoundConfig, SpecialistSpec
    from engine.round.run import run_round

    store = Store(tmp_path / "ds", create=True)
    ingest(str(small_world.images("gold")), store, IngestConfig(split="gold"))
    config = RoundConfig(specialists=(SpecialistSpec("rapidocr", workers=2),), shard_size=2, splits=("gold",),
                         ray_address=loopback_cluster)
    assert not ray.is_initialized()
    summary = run_round(store, 1, config)
    assert summary.images == small_world.config.split_counts()["gold"] and summary.failures == 0
    assert not ray.is_initialized()  # disconnected; the cluster itself keeps running
    with ray.init(address=loopback_cluster, logging_level="ERROR"):
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2


def test_scheduled_runs_execute_through_a_worker_and_go_on_round_after_round(small_world, tmp_path):
    """A real `prefect server start`, the engine registered with a process work pool by `fld
    schedule`, a real `prefect worker start`: the schedule's runs execute one after the other, each
    going on from the last finished round, and `fld rounds` lists them."""
    import json

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_WORKER_QUERY_SECONDS": "3"}
    data = tmp_path / "ds"
    ingest(str(small_world.images("gold")), Store(data, create=True), IngestConfig(split="gold"))
    config = tmp_path / "round.toml"
    config.write_text('splits = ["gold"]\nshard_size = 8\n[[specialists]]\nname = "rapidocr"\n')
    started = []

    def start(*args: str) -> subprocess.Popen:
        process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(process)
        return process

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=180)

    try:
        start("prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        deadline = time.monotonic() + 180
        while run("prefect", "work-pool", "ls").returncode != 0:
            assert time.monotonic() < deadline, "the Prefect server did not start"
            time.sleep(2)
        assert run("prefect", "work-pool", "create", "fld-pool", "--type", "process").returncode == 0
        registered = run("fld", "schedule", "--config", str(config), "--gold", str(small_world.gold), "--data", str(data),
                         "--interval", "20", "--rounds", "1", "--name", "nightly", "--work-pool", "fld-pool")
        assert registered.returncode == 0, registered.stderr
        start("prefect", "worker", "start", "--pool", "fld-pool")
        completed: list[int] = []
        deadline = time.monotonic() + 480
        while len(completed) < 2 and time.monotonic() < deadline:
            time.sleep(3)
            listed = run("fld", "rounds", "--data", str(data), "--json")
            if listed.returncode == 0:
                completed = [r["round"] for r in json.loads(listed.stdout) if r["status"] == "completed"]
        assert completed[:2] == [1, 2], f"scheduled runs completed rounds {completed}"
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
