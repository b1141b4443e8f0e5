"""Lesson 07 at SIGTERM, on a real uvicorn process: watchers get `cancelled`, then the end.

uvicorn's order at SIGTERM (uvicorn/server.py, ``Server.shutdown``): stop accepting, wait for
the open connections, cancel what is left after ``--timeout-graceful-shutdown``, and only then
run the lifespan's shutdown. A registry closed by the lifespan alone is closed too late: its
watchers are cut off by the timeout, with no `cancelled`. Lesson 07's app closes it at the
signal itself (``course_app.streams.shutdown.close_at_shutdown``). TestClient cannot show any of this:
it has no signals and no connections to wait for, so both run in a subprocess here.

The verdicts do not depend on speed: the jobs run for a minute (pace 1, 200 photos) unless
cancelled, and "promptly" means "before uvicorn's graceful timeout cut anything off", read
from uvicorn's own log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import pytest
from fastapi import FastAPI

from course_app.checking import load_exercise
from course_app.services import WorkerProcesses

SOLUTION_APP = "solutions.07_progress_reporting:app"
LIFESPAN_ONLY_APP = "test_07_shutdown:lifespan_only_app"  # built by __getattr__ below
TIMEOUT_LINE = "timeout graceful shutdown exceeded"  # uvicorn's, when it cancels what is left
A_MINUTE = {"COURSE_PACE": "1"}  # 200 photos x 0.3 s: the jobs outlive the test


def __getattr__(name: str) -> Any:
    """`lifespan_only_app`: lesson 07's app with its registry closed by the lifespan only.

    The way the lesson used to do it (and the way most code does it): built only when the
    uvicorn subprocess imports it, not when pytest collects this module.
    """
    if name != "lifespan_only_app":
        raise AttributeError(name)
    app: FastAPI = load_exercise("07_progress_reporting", "solutions").create_app()
    registry = app.state.jobs

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await registry.aclose()

    app.router.lifespan_context = lifespan
    return app


@pytest.fixture
def start_uvicorn() -> Iterator[Any]:
    started: list[WorkerProcesses] = []

    def start(app: str, grace: int) -> WorkerProcesses:
        env = {**A_MINUTE, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), "."])}
        server = WorkerProcesses(app, workers=1, name=f"t07-{len(started)}", env=env, grace=grace)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def watch_through_sigterm(server: WorkerProcesses) -> tuple[list[str], str | None]:
    """Watch a new job; SIGTERM the server after two events; read until the stream ends.

    Returns the events received after the signal and how the stream ended (None: cleanly).
    """
    after_signal: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        url = client.post("/jobs", json={"photos": 200}).headers["location"]
        client.post("/jobs", json={"photos": 199})  # a second job that nobody watches
        try:
            with httpx_sse.connect_sse(client, "GET", url) as source:
                for count, sse in enumerate(source.iter_sse(), start=1):
                    if count == 2:
                        os.kill(server.pid, signal.SIGTERM)  # workers=1: the server itself
                    elif count > 2:
                        after_signal.append(sse.event)
        except httpx.RemoteProtocolError as exc:
            return after_signal, f"cut off ({exc})"
    return after_signal, None


def exited(server: WorkerProcesses, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while server.running and time.monotonic() < deadline:
        time.sleep(0.02)
    return not server.running


def shutdown_lines(server: WorkerProcesses) -> list[str]:
    """uvicorn's log from "Shutting down" on, without the level prefixes."""
    lines = [line.split(":", 1)[-1].strip() for line in server.logs]
    return lines[lines.index("Shutting down") :]


def test_sigterm_ends_each_watcher_with_one_cancelled_event(start_uvicorn: Any) -> None:
    server = start_uvicorn(SOLUTION_APP, grace=10)
    after_signal, ended = watch_through_sigterm(server)
    assert exited(server), "uvicorn did not exit after SIGTERM"
    lines = shutdown_lines(server)
    assert ended is None, f"the stream was {ended}; uvicorn logged {lines}"
    assert after_signal[-1:] == ["cancelled"], after_signal
    assert after_signal.count("cancelled") == 1 and set(after_signal) <= {"progress", "cancelled"}
    assert not any(TIMEOUT_LINE in line for line in lines), lines
    # The lifespan's shutdown came after the streams had ended, as uvicorn orders it.
    assert lines[-3:-1] == ["Waiting for application shutdown.", "Application shutdown complete."]


def test_a_registry_closed_by_the_lifespan_alone_is_closed_too_late(start_uvicorn: Any) -> None:
    """What the lesson teaches about uvicorn's order, shown on uvicorn itself."""
    server = start_uvicorn(LIFESPAN_ONLY_APP, grace=1)
    after_signal, ended = watch_through_sigterm(server)
    assert exited(server), "uvicorn did not exit after SIGTERM"
    lines = shutdown_lines(server)
    assert ended is not None and ended.startswith("cut off"), (ended, after_signal)
    assert "cancelled" not in after_signal, after_signal
    # The timeout cancelled the stream first; the lifespan (and the registry) came after.
    cancel = next(i for i, line in enumerate(lines) if TIMEOUT_LINE in line)
    assert lines.index("Waiting for application shutdown.") > cancel, lines


def test_a_closed_registry_refuses_new_jobs() -> None:
    """After aclose() (the shutdown signal), start() is a RegistryFull: POST /jobs is a 503."""
    lesson = load_exercise("07_progress_reporting", "solutions")

    async def main() -> None:
        registry = lesson.JobRegistry()
        running = registry.start(lesson.JobRequest(photos=200))
        await registry.aclose()
        assert running.task is not None and running.task.cancelled()
        with pytest.raises(lesson.RegistryFull, match="shutting down"):
            registry.start(lesson.JobRequest(photos=1))

    asyncio.run(main())
