"""Nothing left behind: however an ``fld`` process ends (it returns, Ctrl-C, a crash, kill -9),
no server or worker it started outlives it by more than a few seconds.

Libraries start long-lived children of their own: Prefect's ephemeral API server (uvicorn) and
Ray's agents keep running when the process that started them is killed, because nothing tells
them. ``watch()`` marks the process with an environment variable that every process it starts
inherits (Ray's raylet passes it on to the workers and agents it spawns, Prefect to its server)
and starts a small watcher in its own session. The watcher also notes the process's descendants
every second, because a process that renames itself (Ray's ``ray::...`` titles, via
setproctitle) may overwrite its environment block. When the watched process is gone, the
watcher stops every process that carries the mark or was seen among its descendants (same pid,
same start time): SIGTERM, then SIGKILL after a grace period.

Processes of another session (a Ray cluster started with ``ray start``, a Prefect server, a
docker-compose stack) do not carry the mark and are never touched.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import psutil

log = logging.getLogger(__name__)

MARK = "FLD_RUN_MARK"
"""The environment variable that names the ``fld`` process a process was started under."""
LOOK_EVERY_S = 1.0
"""How often the watcher notes the watched process's descendants."""
GRACE_S = 3.0
"""How long marked processes get to exit on SIGTERM before SIGKILL."""


def mark_of(process: psutil.Process) -> str:
    """The mark of a process: its pid and start time (a pid alone can be reused)."""
    return f"{process.pid}-{process.create_time():.3f}"


def watch() -> str:
    """Mark this process and start its watcher (once per process); returns the mark."""
    me = psutil.Process()
    mark = mark_of(me)
    if os.environ.get(MARK) == mark:
        return mark
    os.environ[MARK] = mark
    environment = {k: v for k, v in os.environ.items() if k != MARK}  # the watcher is not one of the marked
    subprocess.Popen([sys.executable, "-m", "engine.reaper", str(me.pid), mark], env=environment,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)  # its own session: Ctrl-C does not stop it
    return mark


def environment_of(process: psutil.Process) -> set[str]:
    """A process's ``KEY=value`` entries. On Linux read from ``/proc`` skipping blanks: a process
    that renames itself (Ray's ``ray::...`` titles, via setproctitle) zeroes the start of the
    block, where psutil's parser stops."""
    try:
        with open(f"/proc/{process.pid}/environ", "rb") as handle:
            return {entry.decode(errors="replace") for entry in handle.read().split(b"\0") if entry}
    except FileNotFoundError:
        return {f"{k}={v}" for k, v in process.environ().items()}  # no /proc: macOS and the like


def marked(mark: str) -> list[psutil.Process]:
    """This user's processes that carry ``mark``."""
    entry, found = f"{MARK}={mark}", []
    for process in psutil.process_iter():
        try:
            if entry in environment_of(process):
                found.append(process)
        except (psutil.Error, OSError):  # gone, or another user's process
            continue
    return found


def stop(processes: list[psutil.Process], grace_s: float = GRACE_S) -> list[psutil.Process]:
    """SIGTERM each, SIGKILL what is left after ``grace_s``; returns those that were killed."""
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return alive


def descendants(process: psutil.Process) -> dict[int, float]:
    """The pid and start time of each of a process's descendants."""
    seen = {}
    for child in process.children(recursive=True):
        try:
            seen[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return seen


def still_running(seen: dict[int, float]) -> list[psutil.Process]:
    """The processes of ``seen`` that still run (a reused pid has another start time)."""
    alive = []
    for pid, created in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created:
                alive.append(process)
        except psutil.Error:
            continue
    return alive


def reap(pid: int, mark: str) -> int:
    """Wait until the process ``pid`` (whose mark is ``mark``) ends, noting its descendants as it
    runs; then stop every process that carries its mark or was seen among its descendants.
    Returns how many there were."""
    seen: dict[int, float] = {}
    try:
        watched = psutil.Process(pid)
        while mark_of(watched) == mark:
            seen.update(descendants(watched))
            try:
                watched.wait(timeout=LOOK_EVERY_S)
                break
            except psutil.TimeoutExpired:
                continue
    except psutil.NoSuchProcess:
        pass
    started = time.monotonic()
    left = list({p.pid: p for p in marked(mark) + still_running(seen) if p.pid != os.getpid()}.values())
    if left:
        stop(left)
        log.warning("stopped %d process(es) left by fld process %d in %.1f s", len(left), pid,
                    time.monotonic() - started)
    return len(left)


if __name__ == "__main__":  # the watcher: python -m engine.reaper PID MARK
    reap(int(sys.argv[1]), sys.argv[2])
