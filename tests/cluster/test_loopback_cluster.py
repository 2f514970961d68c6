"""The same round on a real multi-process Ray cluster on this machine (a head and a second node;
Ray registers them under the machine's own address, whatever --node-ip-address says),
and the engine scheduled on a real `prefect server start`: the topology of docker-compose.yml,
without Docker. Slow (clusters and servers take their time to start): `make test-slow`."""

from __future__ import annotations

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


def test_schedule_registers_on_a_real_prefect_server(small_world, tmp_path):
    port = free_port()
    home = tmp_path / "prefect"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    config = tmp_path / "round.toml"
    config.write_text('splits = ["gold"]\n[[specialists]]\nname = "rapidocr"\n')
    serving = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            check = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env, capture_output=True, text=True)
            if check.returncode == 0:
                break
            time.sleep(2)
        serving = subprocess.Popen(
            [str(BIN / "fld"), "schedule", "--config", str(config), "--gold", str(small_world.gold),
             "--data", str(tmp_path / "ds"), "--interval", "3600", "--name", "nightly"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        listed = ""
        while time.time() < deadline + 60 and "nightly" not in listed:
            time.sleep(2)
            listed = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env, capture_output=True,
                                    text=True).stdout
        assert "data-engine/nightly" in listed.replace(" ", "") or "nightly" in listed
        inspect = subprocess.run([str(BIN / "prefect"), "deployment", "inspect", "data-engine/nightly"], env=env,
                                 capture_output=True, text=True).stdout
        assert "3600" in inspect and str(small_world.gold) in inspect
    finally:
        for process in (serving, server):
            if process is not None:
                os.killpg(process.pid, signal.SIGKILL)
