"""course_app.services.worker_processes: `uvicorn --workers 2` as a subprocess, stopped for good."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import httpx_sse
import psutil
import pytest

from course_app.services import WorkerProcesses, WorkerProcessesError, start_workers

APP = "course_app.demos.broadcast_app:app"


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def first_event(url: str) -> tuple[str, dict]:
    with httpx.Client(timeout=10) as http, httpx_sse.connect_sse(http, "GET", url) as source:
        sse = next(source.iter_sse())
        return sse.event, json.loads(sse.data)


def test_two_workers_share_one_port_and_stop_together() -> None:
    workers = WorkerProcesses(APP, workers=2, name="t-two").start()
    try:
        pids = workers.worker_pids
        assert len(pids) == 2 and workers.pid not in pids
        # Each connection lands on one worker or the other: both answer on the one port.
        seen: set[int] = set()
        for _ in range(100):
            event, data = first_event(workers.url + "/stream")
            assert event == "init"
            seen.add(data["worker"])
            if seen == set(pids):
                break
        assert seen == set(pids)
        everyone = [workers.pid, *pids]
    finally:
        workers.stop()
    assert all(gone(pid) for pid in everyone if pid is not None)
    assert not workers.running and workers.worker_pids == []
    workers.stop()  # idempotent


def test_env_reaches_the_workers_and_one_worker_is_one_process() -> None:
    # Nothing listens on port 9 of loopback: the app starts anyway and says Redis is down.
    env = {"REDIS_URL": "redis://127.0.0.1:9/0"}
    with WorkerProcesses(APP, workers=1, name="t-env", env=env) as workers:
        assert workers.worker_pids == [workers.pid]
        with (
            httpx.Client(timeout=10) as http,
            httpx_sse.connect_sse(http, "GET", workers.url + "/stream") as source,
        ):
            events = []
            for sse in source.iter_sse():
                events.append(sse.event)
                if sse.event == "status":
                    assert json.loads(sse.data)["redis"] == "down"
                    break
        assert events[:2] == ["init", "status"]
        assert any("Redis at redis://127.0.0.1:9/0 is unreachable" in line for line in workers.logs)


def test_starting_the_same_name_again_replaces_it() -> None:
    first = start_workers(APP, name="t-rerun", workers=1)
    first_pid = first.pid
    second = start_workers(APP, name="t-rerun", workers=1)
    try:
        assert first_pid is not None and gone(first_pid)
        assert httpx.get(second.url + "/").status_code == 200
    finally:
        second.stop()


def test_an_app_that_cannot_load_is_a_one_line_error() -> None:
    with pytest.raises(
        WorkerProcessesError, match=r"failed to start: .*course_app\.nope"
    ) as caught:
        WorkerProcesses("course_app.nope:app", workers=2, name="t-bad").start()
    assert "\n" not in str(caught.value)


def test_workers_end_when_the_process_that_started_them_is_killed() -> None:
    script = textwrap.dedent(
        f"""
        import time
        from course_app.services import start_workers
        workers = start_workers({APP!r}, name="orphan", workers=2)
        print(workers._dir, *[workers.pid, *workers.worker_pids], flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        folder, *numbers = child.stdout.readline().split()
        pids = [int(p) for p in numbers]
        assert len(pids) == 3
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5)
    assert all(gone(pid) for pid in pids)
    shutil.rmtree(folder)  # what atexit would have removed, had the process had the chance
