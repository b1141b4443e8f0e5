"""Lesson 05's app under abuse: 200 abrupt disconnects, and a client that stops reading."""

from __future__ import annotations

import asyncio
import socket
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from course_app.checking import load_exercise
from course_app.runtime import LessonServer


@pytest.fixture(scope="module")
def lesson():
    return load_exercise("05_disconnects_and_lifecycle", "solutions")


def add_task_counter(app: FastAPI) -> None:
    @app.get("/debug/tasks")
    async def tasks() -> dict[str, int]:
        return {"tasks": len(asyncio.all_tasks())}


def get_json(port: int, path: str) -> dict:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).json()


def wait_for(predicate, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def open_stream(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return sock


@pytest.fixture
def server(lesson) -> Iterator[LessonServer]:
    app = lesson.create_app(send_timeout=0.5)
    add_task_counter(app)
    with LessonServer(app, name="t05-reliability", grace=0.5) as running:
        yield running


def test_200_abrupt_disconnects_leave_nothing_behind(server: LessonServer) -> None:
    streams = server.app.state.streams
    # One stream first: sse-starlette starts one shutdown watcher task per server thread.
    warmup = open_stream(server.port, "/events")
    warmup.recv(256)
    warmup.close()
    assert wait_for(lambda: streams.open == 0)
    baseline = get_json(server.port, "/debug/tasks")["tasks"]
    for _batch in range(4):
        sockets = [open_stream(server.port, "/events") for _ in range(50)]
        for sock in sockets:
            assert sock.recv(256), "the stream did not start"
        for index, sock in enumerate(sockets):
            if index % 2:  # half reset the connection, half close it politely
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            sock.close()
    assert wait_for(lambda: streams.open == 0), f"{streams.open} streams still hold a connection"
    assert streams.peak >= 50
    assert wait_for(lambda: get_json(server.port, "/debug/tasks")["tasks"] <= baseline), (
        "tasks leaked"
    )


def test_a_client_that_stops_reading_is_dropped(server: LessonServer) -> None:
    """send_timeout frees the stream of a frozen client, and the server buffers one event, not all"""
    streams = server.app.state.streams
    tracemalloc.start()  # the server runs in this process: its allocations are traced too
    try:
        frozen = open_stream(server.port, "/events?size=200000")
        frozen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            assert wait_for(lambda: streams.open == 1, 5)
            # We never read: the socket buffers fill, sends stall, send_timeout fires.
            assert wait_for(lambda: streams.open == 0), "the frozen client kept its stream"
            assert any("cancelled" in line or "SendTimeout" in line for line in server.logs)
        finally:
            frozen.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A stalled send holds one 200 kB event, not a queue of them.
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB buffered for a client that reads nothing"
