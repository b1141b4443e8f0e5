"""Lesson 05: the connection a stream holds is released on every ending."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest

from course_app import LessonServer

from task_helpers import cancel_and_wait


def wait_until_released(streams, deadline_s: float = 10.0) -> int:
    deadline = time.monotonic() + deadline_s
    while streams.open and time.monotonic() < deadline:
        time.sleep(0.01)
    return streams.open


@pytest.fixture
def server(exercise: ModuleType) -> Iterator[LessonServer]:
    with LessonServer(exercise.create_app(), name="t05", grace=0.5) as running:
        yield running


def read_events(url: str, how_many: int | None) -> list[str]:
    """Read `how_many` data lines (None: all), then hang up."""
    lines: list[str] = []
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                lines.append(line)
                if how_many is not None and len(lines) == how_many:
                    break
    return lines


def test_normal_end_releases(exercise: ModuleType, server: LessonServer) -> None:
    """a stream that runs to its end releases its connection"""
    assert len(read_events(server.url + "/events?count=3", None)) == 3
    streams = server.app.state.streams
    assert wait_until_released(streams) == 0
    assert streams.peak == 1


def test_disconnect_releases(server: LessonServer) -> None:
    """a client that leaves mid-stream: the connection is released"""
    read_events(server.url + "/events", 3)
    assert wait_until_released(server.app.state.streams) == 0
    deadline = time.monotonic() + 5
    while not any("cancelled" in line for line in server.logs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any("cancelled" in line for line in server.logs), "log the cancellation"


def test_error_releases(server: LessonServer) -> None:
    """an error inside the stream: the connection is released"""
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):  # the connection is cut mid-body
        with httpx.Client(timeout=10) as client:
            with client.stream("GET", server.url + "/events?fail_at=2") as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        received.append(line)
    assert len(received) == 2, "two events, then the failure"
    streams = server.app.state.streams
    assert wait_until_released(streams) == 0
    assert streams.peak == 1


def test_frozen_client_releases(exercise: ModuleType) -> None:
    """a client that stops reading is dropped by send_timeout: the connection is released"""
    app = exercise.create_app(send_timeout=0.5)
    with LessonServer(app, name="t05-frozen", grace=0.5) as server:
        streams = server.app.state.streams
        with socket.create_connection(("127.0.0.1", server.port)) as frozen:
            frozen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            frozen.sendall(b"GET /events?size=200000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            deadline = time.monotonic() + 10
            while not streams.peak and time.monotonic() < deadline:
                time.sleep(0.01)
            assert streams.peak == 1, "the stream did not start"
            # We never read: the socket buffers fill up, a send stalls, send_timeout fires.
            assert wait_until_released(streams) == 0, "the frozen client kept its connection"


def test_shutdown_releases(exercise: ModuleType) -> None:
    """a server shutting down with a client connected: the connection is released"""
    server = LessonServer(exercise.create_app(), name="t05-shutdown", grace=0.5).start()
    streams = server.app.state.streams
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", server.url + "/events") as response,
    ):
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        assert streams.open == 1
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(15)
    assert not stopper.is_alive()
    assert streams.open == 0


def test_cancellation_propagates(exercise: ModuleType) -> None:
    """cancelling the consuming task cancels it for real (CancelledError is re-raised)"""

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
    assert still_open == 0


def test_events_are_numbered_with_ids(server: LessonServer) -> None:
    """events carry ids 0, 1, 2 and JSON data"""
    with httpx.Client(timeout=10) as client:
        body = client.get(server.url + "/events?count=3").text
    ids = [line for line in body.splitlines() if line.startswith("id:")]
    assert ids == ["id: 0", "id: 1", "id: 2"]
    assert 'data: {"n": 2, "pad": ""}' in body


def test_bad_parameters_are_422(server: LessonServer) -> None:
    """count=-1 or size too large is a 422 before any stream starts"""
    assert httpx.get(server.url + "/events?count=-1").status_code == 422
    assert httpx.get(server.url + "/events?size=99999999").status_code == 422
