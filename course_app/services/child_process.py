"""The primitives that keep child programs from piling up: free ports, the parent-death signal, stops.

:class:`course_app.services.managed_process.ManagedProcess` builds the course's one lifecycle
from them (re-run safe by name, stopped at exit); benchmarks use them directly:

- :func:`free_port`: a loopback port to start a program on;
- :func:`parent_death_hook`: on Linux, the child is told to end when the thread that started
  it dies (``PR_SET_PDEATHSIG``), which covers what ``atexit`` cannot: a kernel killed with
  SIGKILL, a test run killed on a timeout. Start children from a thread that lives as long as
  they should (a notebook's or a test's main thread);
- :func:`stop_process_group`: ends a program *and* the processes it forked (uvicorn's
  workers, nginx's worker), first politely (SIGTERM), then for sure (SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import psutil


def free_port() -> int:
    """A loopback port that was free a moment ago (the caller retries if it is taken since)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child, before exec
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def parent_death_hook() -> Callable[[], None] | None:
    """``preexec_fn`` for :class:`subprocess.Popen`: SIGTERM the child if its starter dies."""
    return _set_parent_death_signal if sys.platform == "linux" else None


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """End ``process`` and every process in its group (start it with ``start_new_session``).

    SIGTERM first, so that programs shut down cleanly (uvicorn's supervisor stops its
    workers); SIGKILL for whatever is still there after ``grace`` seconds.
    """
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        group = None
    if group is not None and group != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    elif process.poll() is None:
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    if group is not None and group != os.getpgid(0):
        # The leader may be gone while a worker lingers: kill the whole group, then wait
        # until none of it is left (a bounded wait; zombies count as gone).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    elif process.poll() is None:
        process.kill()
    process.wait(5)
    deadline = time.monotonic() + 5
    while group is not None and _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still "exist" for kill(): look for a live member instead.
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False
