"""The lesson server: start, stop, replace, fail fast, and leak nothing."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sse_starlette.sse import AppStatus

from course_app.demos.endless_demo import create_app
from course_app.runtime import LessonServer, LessonServerError, running_servers, serve


def endless_app() -> FastAPI:
    return create_app(interval=0.05)


def first_data_lines(url: str, count: int) -> list[str]:
    with httpx.Client(timeout=5) as client, client.stream("GET", url) as response:
        lines = (line for line in response.iter_lines() if line.startswith("data:"))
        return [next(lines) for _ in range(count)]


def test_serves_on_loopback_and_stops() -> None:
    with LessonServer(endless_app(), name="t-basic") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(server.url + "/hello").json() == {"hello": "world"}
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url.replace(str(server.port), str(server.port)) + "/hello", timeout=1)


def test_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LessonServer(endless_app(), host="0.0.0.0")


def test_rerunning_serve_replaces_the_previous_server() -> None:
    app = endless_app()
    first = serve(app, name="t-replace")
    second = serve(app, name="t-replace")
    try:
        assert not first.running
        assert second.running
        assert [s for s in running_servers() if s.name == "t-replace"] == [second]
    finally:
        second.stop()


def test_port_in_use_raises_a_clear_error_fast() -> None:
    with LessonServer(endless_app(), name="t-holder") as holder:
        started = time.monotonic()
        with pytest.raises(LessonServerError, match="address already in use"):
            LessonServer(
                endless_app(), name="t-clash", port=holder.port, startup_timeout=30
            ).start()
        # Detected from the dead thread, not by waiting out the 30 s startup timeout.
        assert time.monotonic() - started < 10


def test_failing_lifespan_raises_the_apps_error() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database is down")
        yield

    with pytest.raises(LessonServerError, match="RuntimeError: database is down"):
        LessonServer(FastAPI(lifespan=lifespan), name="t-lifespan").start()


def test_hanging_startup_times_out() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.sleep(60)
        yield

    with pytest.raises(LessonServerError, match="did not start within"):
        LessonServer(FastAPI(lifespan=lifespan), name="t-hang", startup_timeout=0.5).start()


@pytest.mark.parametrize("path", ["/native", "/sse-starlette"])
def test_stop_is_bounded_with_a_client_still_connected(path: str) -> None:
    server = LessonServer(endless_app(), name="t-open-client", grace=0.5).start()
    with httpx.Client(timeout=5) as client, client.stream("GET", server.url + path) as response:
        lines = response.iter_lines()
        next(lines)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(timeout=10)
        assert not stopper.is_alive(), "stop() hung with a client connected"
    assert not server.running


def test_a_server_started_after_a_stop_streams_normally() -> None:
    app = endless_app()
    with LessonServer(app, name="t-before") as server:
        first_data_lines(server.url + "/sse-starlette", 2)
    assert AppStatus.should_exit is False
    with LessonServer(app, name="t-after") as server:
        assert first_data_lines(server.url + "/sse-starlette", 3) == [
            "data: 0",
            "data: 1",
            "data: 2",
        ]


def test_stopping_one_server_does_not_end_another_servers_streams() -> None:
    app = endless_app()
    with LessonServer(app, name="t-keep") as keep:
        with LessonServer(app, name="t-drop"):
            pass
        assert first_data_lines(keep.url + "/sse-starlette", 2) == ["data: 0", "data: 1"]


def test_logs_stay_out_of_stderr_and_in_server_logs(capfd: pytest.CaptureFixture[str]) -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("kaboom")

    with LessonServer(app, name="t-logs") as server:
        assert httpx.get(server.url + "/boom").status_code == 500
        time.sleep(0.05)
        logs = server.logs
    out, err = capfd.readouterr()
    assert "kaboom" not in out + err
    assert any("ValueError: kaboom" in line for line in logs)


def test_asyncio_warnings_from_a_server_loop_go_to_its_logs(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # asyncio logs "socket.send() raised exception." when a burst of writes meets a
    # connection the client has just reset; from a lesson server's loop that belongs in the
    # server's logs, not in whatever notebook cell happens to be running.
    app = FastAPI()

    @app.get("/warn")
    async def warn() -> None:
        logging.getLogger("asyncio").warning("socket.send() raised exception.")

    with LessonServer(app, name="t-asyncio-logs") as server:
        assert httpx.get(server.url + "/warn").status_code == 200
        deadline = time.monotonic() + 5
        while not any("socket.send()" in line for line in server.logs):
            assert time.monotonic() < deadline, server.logs[-5:]
            time.sleep(0.02)
    out, err = capfd.readouterr()
    assert "socket.send()" not in out + err


def _open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_fifty_start_stop_cycles_leak_no_threads_or_file_descriptors() -> None:
    app = endless_app()
    with LessonServer(app, name="t-warmup") as server:  # first use loads modules, opens logs
        httpx.get(server.url + "/hello")
    gc.collect()  # earlier tests' garbage closes its sockets now, not during the count
    threads, fds = threading.active_count(), _open_fds()
    # Plain http, yet each httpx.get() would load certifi's bundle into a new TLS context:
    # 30 ms of CPU a cycle, five times what the start and stop cost. Build one.
    plain = ssl.create_default_context()
    for _ in range(50):
        with LessonServer(app, name="t-cycle") as server:
            httpx.get(server.url + "/hello", verify=plain)
    gc.collect()
    assert threading.active_count() == threads
    assert _open_fds() == fds
