"""However ``fld`` ends, nothing it started outlives it; and while a round runs on the embedded
default, every socket its processes listen on is loopback and none talks off the machine."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from engine.reaper import MARK
from tests.engine.test_resume import config, dataset

ROOT = Path(__file__).resolve().parents[2]
FLD = Path(sys.executable).parent / "fld"


def gone_within(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """The processes still running after ``seconds`` (waits no longer than it must)."""
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return alive


def unmarked_environment() -> dict[str, str]:
    """This process's environment without its own run mark (a child starts its own)."""
    return {k: v for k, v in os.environ.items() if k != MARK}


SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_a_killed_process_takes_what_it_started_with_it_and_nothing_else():
    parent = textwrap.dedent(f"""
        import subprocess, sys
        from engine.reaper import watch
        watch()
        child = subprocess.Popen({SLEEPER!r}, start_new_session=True)  # not even in its process group
        print(child.pid, flush=True)
        child.wait()
    """)
    bystander = subprocess.Popen(SLEEPER, env=unmarked_environment())  # not started by the killed process
    driver = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, env=unmarked_environment(),
                              stdout=subprocess.PIPE, text=True)
    grandchild = psutil.Process(int(driver.stdout.readline()))
    try:
        driver.kill()
        driver.wait(timeout=10)
        assert not gone_within([grandchild], 20), "the grandchild outlived the killed process"
        assert bystander.poll() is None, "the watcher stopped a process its fld process did not start"
    finally:
        bystander.kill()
        with contextlib.suppress(psutil.Error):
            grandchild.kill()


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def off_machine(process: psutil.Process) -> list[str]:
    """Sockets of a process that listen on, or talk to, anything but loopback."""
    found = []
    try:
        connections = process.net_connections(kind="inet")
    except psutil.Error:
        return found
    for c in connections:
        if c.status == psutil.CONN_LISTEN and not loopback(c.laddr.ip):
            found.append(f"{process.name()} ({process.pid}) listens on {c.laddr.ip}:{c.laddr.port}")
        elif c.raddr and not loopback(c.raddr.ip):
            found.append(f"{process.name()} ({process.pid}) talks to {c.raddr.ip}:{c.raddr.port}")
    return found


@pytest.mark.parametrize("ending", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["kill-9", "ctrl-c"])  # Ctrl-C ends more gently than kill -9: slow suite
def test_a_round_on_the_embedded_default_is_loopback_only_and_leaves_nothing_behind(
        ending, small_world, yolo_weights, tmp_path):
    store = dataset(small_world, tmp_path / "ds", ("pool", "gold"))
    round_config = tmp_path / "round.json"
    round_config.write_text(config(str(yolo_weights)).to_json())
    markers = store.root / "_markers" / "round=1"
    driver = subprocess.Popen([str(FLD), "round", "run", "-c", str(round_config), "-d", str(store.root)], cwd=tmp_path,
                              env=unmarked_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline and not list(markers.glob("shard-*.json")):
            time.sleep(0.2)
        assert driver.poll() is None, "the round finished (or failed) before it could be interrupted"
        started = psutil.Process(driver.pid).children(recursive=True)
        assert any("raylet" in p.name() for p in started), "no local Ray among the driver's processes"
        exposed = [line for p in [psutil.Process(driver.pid), *started] for line in off_machine(p)]
        assert not exposed, "\n".join(exposed)
        os.kill(driver.pid, ending)
        driver.wait(timeout=60)
        left = gone_within(started, 30)
        assert not left, f"still running after the driver ended: {[(p.pid, p.name()) for p in left]}"
    finally:
        driver.kill()
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()


AUDIT = '''
"""Loaded by every Python process of the audited run (PYTHONPATH): notes each name lookup and
each connection that leaves the machine, one file per process."""
import ipaddress, os, socket

_LOG = os.path.join(os.environ["FLD_NET_AUDIT"], f"{os.getpid()}.log")
_LOCAL = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _note(what):
    with open(_LOG, "a") as handle:
        handle.write(what + "\\n")


def _off(host):
    if host is None or str(host).lower() in _LOCAL:
        return False
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return True  # a name that is not this machine's: a DNS query
    return not (getattr(address, "ipv4_mapped", None) or address).is_loopback and not address.is_unspecified


_getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect


def getaddrinfo(host, *args, **kwargs):
    if _off(host):
        _note(f"lookup {host}")
    return _getaddrinfo(host, *args, **kwargs)


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and _off(address[0]):
        _note(f"connect {address[0]}:{address[1]}")
    return _connect(self, address)


socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
'''


def test_a_whole_round_on_the_embedded_default_looks_nothing_up_and_connects_nowhere(small_world, yolo_weights,
                                                                                      tmp_path):
    """Every Python process of `fld round run` (the CLI, Prefect's server, Ray's workers and
    agents) is audited; Ray's C++ servers are not (their sockets are checked above)."""
    store = dataset(small_world, tmp_path / "ds", ("gold",))
    round_config = tmp_path / "round.json"
    round_config.write_text(config(str(yolo_weights)).to_json())
    audit, logs = tmp_path / "audit", tmp_path / "net"
    audit.mkdir()
    logs.mkdir()
    (audit / "sitecustomize.py").write_text(AUDIT)
    env = {**unmarked_environment(), "PYTHONPATH": str(audit), "FLD_NET_AUDIT": str(logs)}
    control = "import socket\ntry:\n    socket.getaddrinfo('fld-audit.invalid', 80)\nexcept OSError:\n    pass"
    subprocess.run([sys.executable, "-c", control], env=env, check=True, timeout=60)
    noted = [line for p in logs.glob("*.log") for line in p.read_text().splitlines()]
    assert noted == ["lookup fld-audit.invalid"], "the audit is not loaded in the processes it should watch"
    for p in logs.glob("*.log"):
        p.unlink()
    done = subprocess.run([str(FLD), "round", "run", "-c", str(round_config), "-d", str(store.root)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    audited = list(logs.glob("*.log"))
    assert not audited, {p.stem: p.read_text().splitlines()[:5] for p in audited}
    assert store.read("regions", 1).num_rows > 0  # the round did run
