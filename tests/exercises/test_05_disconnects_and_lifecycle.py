"""Lesson 05: the connection a stream holds is released on every ending."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import ModuleType

import httpcore
import httpx
import pytest

from course_app.checking import (  # noqa: F401  (fixtures: one client, one server per module)
    PluggedApp,
    SharedServer,
    loopback_client,
    shared_server,
)
from course_app.runtime import LessonServer

from task_helpers import cancel_and_wait, server_said


def wait_until_released(streams, deadline_s: float = 10.0) -> int:
    deadline = time.monotonic() + deadline_s
    while streams.open and time.monotonic() < deadline:
        time.sleep(0.01)
    return streams.open


@pytest.fixture
def server(exercise: ModuleType, shared_server: SharedServer) -> PluggedApp:  # noqa: F811
    """A fresh app for each test, on the module's one server (a server stop costs 0.1 s)."""
    return shared_server.plug(exercise.create_app())


@pytest.fixture
def http(loopback_client: httpx.Client) -> httpx.Client:  # noqa: F811
    return loopback_client


def read_events(
    http: httpx.Client, server: PluggedApp, path: str, how_many: int | None
) -> list[str]:
    """Read `how_many` data lines (None: all), then hang up."""
    lines: list[str] = []
    try:
        with http.stream("GET", server.url + path) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:"):
                    lines.append(line)
                    if how_many is not None and len(lines) == how_many:
                        break
    except httpx.RemoteProtocolError:
        pytest.fail(f"the stream broke off after {len(lines)} events{server_said(server)}")
    return lines


def test_normal_end_releases(server: PluggedApp, http: httpx.Client) -> None:
    """a stream that runs to its end releases its connection

    Where do you acquire: before the loop, so that every way out of the generator passes
    one single release? Does the loop stop after `count` events?
    """
    assert len(read_events(http, server, "/events?count=3", None)) == 3
    streams = server.app.state.streams
    still_open = wait_until_released(streams)
    assert still_open == 0, "the connection was not released"
    peak = streams.peak
    assert peak == 1, "one stream should hold exactly one connection"


def test_disconnect_releases(server: PluggedApp, http: httpx.Client) -> None:
    """a client that leaves mid-stream: the connection is released

    When the client hangs up, sse-starlette cancels your generator at its `await`. Which
    block runs on that path as well as after the last event? The test also looks in the
    log for a line with the word "cancelled": did you log the CancelledError?
    """
    read_events(http, server, "/events", 3)
    still_open = wait_until_released(server.app.state.streams)
    assert still_open == 0, "the connection was not released"
    deadline = time.monotonic() + 5
    while not any("cancelled" in line for line in server.logs) and time.monotonic() < deadline:
        time.sleep(0.01)
    logged = any("cancelled" in line for line in server.logs)
    assert logged, 'log the cancellation: logger.info(...) with the word "cancelled" in the message'


def test_error_releases(server: PluggedApp, http: httpx.Client) -> None:
    """an error inside the stream: the connection is released

    With `fail_at=2`, events 0 and 1 go out, then the data source fails: is the check made
    before event `fail_at` is yielded? The exception leaves your generator: does your
    release sit where an exception passes too?
    """
    received: list[str] = []
    # The connection is cut mid-body. httpx usually reports it as its own error; cut while
    # the response is being closed, it can surface as httpcore's, which httpx did not wrap.
    with pytest.raises((httpx.RemoteProtocolError, httpcore.RemoteProtocolError)):
        with http.stream("GET", server.url + "/events?fail_at=2") as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    received.append(line)
    assert len(received) == 2, f"two events, then the failure{server_said(server)}"
    streams = server.app.state.streams
    still_open = wait_until_released(streams)
    assert still_open == 0, "the connection was not released"
    peak = streams.peak
    assert peak == 1, "one stream should hold exactly one connection"


def test_frozen_client_releases(
    exercise: ModuleType,
    shared_server: SharedServer,  # noqa: F811
) -> None:
    """a client that stops reading is dropped by send_timeout: the connection is released

    When a send times out, sse-starlette closes your generator while it is paused at its
    `yield`: GeneratorExit arrives there, not CancelledError. Does your `except` let it
    through untouched, and does your release still run? Do the events carry `size`
    characters of padding, so that they fill the buffers?
    """
    # send_timeout is not scaled by the pace: 0.2 s is plenty for a client that never reads.
    server = shared_server.plug(exercise.create_app(send_timeout=0.2))
    streams = server.app.state.streams
    with socket.create_connection(("127.0.0.1", server.port)) as frozen:
        frozen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        frozen.sendall(b"GET /events?size=200000 HTTP/1.1\r\nHost: localhost\r\n\r\n")

        # Until the stream takes its connection, or fails before it can (a generator that
        # raises at once is logged as an error): no deadline to wait out on a failure.
        def failed() -> bool:
            return any(line.startswith("ERROR") for line in server.logs)

        deadline = time.monotonic() + 10
        while not streams.peak and not failed() and time.monotonic() < deadline:
            time.sleep(0.01)
        peak = streams.peak
        assert peak == 1, f"the stream did not start{server_said(server)}"
        # We never read: the socket buffers fill up, a send stalls, send_timeout fires.
        still_open = wait_until_released(streams)
        assert still_open == 0, "the frozen client kept its connection"


def test_shutdown_releases(exercise: ModuleType, shared_server: SharedServer) -> None:  # noqa: F811
    """a server shutting down with a client connected: the connection is released

    A shutdown ends the stream by cancellation, as a client that leaves does. Which block
    of your generator runs then, and does anything in your `except` stop the cancellation
    from finishing the stream?
    """
    # sse-starlette's shutdown flag is process-wide: LessonServer sets it only for a server
    # that runs alone, so the module's shared server stops first.
    shared_server.stop()
    server = LessonServer(exercise.create_app(), name="t05-shutdown", grace=0.5).start()
    streams = server.app.state.streams
    try:
        with (
            httpx.Client(timeout=10, verify=False) as client,
            client.stream("GET", server.url + "/events") as response,
        ):
            lines = response.iter_lines()
            try:
                next(line for line in lines if line.startswith("data:"))
            except httpx.RemoteProtocolError:
                pytest.fail(f"the stream broke off before its first event{server_said(server)}")
            assert streams.open == 1, "a running stream should hold one connection"
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            stopper.join(15)
        assert not stopper.is_alive(), "the server did not stop"
        assert streams.open == 0, "the connection was not released at shutdown"
    finally:
        server.stop()


def test_cancellation_propagates(exercise: ModuleType) -> None:
    """cancelling the consuming task cancels it for real (CancelledError is re-raised)

    After logging the CancelledError, does your `except` block end by raising it again? A
    `return`, a `break` or falling off the end makes the task look finished instead of
    cancelled (lesson 01).
    """

    async def main() -> tuple[bool, int]:
        streams = exercise.OpenStreams()

        async def consume() -> None:
            async for _ in exercise.numbered_events(streams):
                pass

        task = asyncio.create_task(consume())
        for _ in range(50):
            await asyncio.sleep(0)
            if streams.open:
                break
        return await cancel_and_wait(task), streams.open

    cancelled, still_open = asyncio.run(main())
    assert cancelled, "CancelledError was swallowed: the task finished instead"
    assert still_open == 0, "the connection was not released"


def test_events_are_numbered_with_ids(server: PluggedApp, http: httpx.Client) -> None:
    """events carry ids 0, 1, 2 and JSON data

    Besides `data`, which key of the dict you yield becomes the `id:` line, and what type
    must its value be? Is `data` built with `json.dumps` from a dict with `n` and `pad`?
    """
    try:
        body = http.get(server.url + "/events?count=3").text
    except httpx.RemoteProtocolError:
        pytest.fail(f"the stream broke off{server_said(server)}")
    ids = [line for line in body.splitlines() if line.startswith("id:")]
    assert ids == ["id: 0", "id: 1", "id: 2"]
    assert 'data: {"n": 2, "pad": ""}' in body


def test_bad_parameters_are_422(server: PluggedApp, http: httpx.Client) -> None:
    """count=-1 or size too large is a 422 before any stream starts

    This one checks the route, which is given: FastAPI checks the query parameters against
    their `Query(ge=..., le=...)` limits before your generator is even created. If it
    fails, has the route's signature been changed?
    """
    assert http.get(server.url + "/events?count=-1").status_code == 422
    assert http.get(server.url + "/events?size=99999999").status_code == 422
