"""A client that leaves a fastapi.sse stream is not an error: course_app.streams.quiet_disconnects.

Over a real socket (uvicorn in a thread): clients open an endless stream that has a
backlog, read a few events and hang up. FastAPI 0.163's keepalive task then logs
``Exception in ASGI application ... BrokenResourceError`` (the first test shows it, so
that the day FastAPI fixes it this file says so); with QuietDisconnectRoute nothing is
logged, and real errors still are.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from course_app.checking import load_exercise
from course_app.runtime import LessonServer, logbook
from course_app.streams import QuietDisconnectRoute

CLIENTS = 12


class CountRequests:
    """Outermost ASGI layer: counts HTTP requests whose handling is over (even by raising)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.done = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.done += 1


def endless_app(route_class: type[APIRoute]) -> FastAPI:
    app = FastAPI()
    app.router.route_class = route_class

    @app.get("/numbers", response_class=EventSourceResponse)
    async def numbers() -> AsyncIterator[ServerSentEvent]:
        n = 0
        while True:  # always a backlog: the keepalive task waits to hand over the next one
            n += 1
            yield ServerSentEvent(data={"n": n, "padding": "x" * 200}, id=str(n))

    @app.get("/broken", response_class=EventSourceResponse)
    async def broken() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(data="one")
        raise RuntimeError("the database went away")

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    return app


class ErrorRecords(logging.Filter):
    """The server's ERROR records, with their exceptions (LogBook keeps one line each)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
        return True

    def leaves(self) -> list[str]:
        """'Type: message' of every exception inside the logged exception groups."""
        found = []

        def walk(exc: BaseException) -> None:
            if isinstance(exc, BaseExceptionGroup):
                for inner in exc.exceptions:
                    walk(inner)
            else:
                found.append(f"{type(exc).__name__}: {exc}")

        for record in self.records:
            if record.exc_info and record.exc_info[1] is not None:
                walk(record.exc_info[1])
        return found


@pytest.fixture
def errors() -> Iterator[ErrorRecords]:
    """Records uvicorn's errors ahead of course_app.runtime.logs' filter, which hands them to LogBook."""
    logbook()  # installs that filter first, so that ours can go before it
    # Earlier tests' garbage is finalized now, not inside this test's server (an unclosed
    # client's finalizer that fails logs an ERROR in whatever loop runs at that moment).
    gc.collect()
    recorder = ErrorRecords()
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.filters.insert(0, recorder)
    yield recorder
    uvicorn_errors.removeFilter(recorder)


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(predicate())


def read_a_bit_and_leave(url: str, path: str, size: int = 2000, headers: str = "") -> None:
    """What `curl -N URL | head` does: read the first bytes, then close the socket."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
        received = b""
        while len(received) < size:
            chunk = client.recv(size)
            assert chunk, f"the server closed {path} after {len(received)} bytes"
            received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]


def settle(server: LessonServer, counter: CountRequests, requests: int, path: str) -> None:
    """Wait until `requests` requests have ended and the server has logged what they raised."""
    assert wait_for(lambda: counter.done >= requests), f"{counter.done} of {requests} ended"
    # A request served after them: the server's loop has finished logging theirs.
    assert httpx.get(server.url + path, timeout=10).status_code == 200


def errors_after_clients_leave(route_class: type[APIRoute], name: str) -> list[str]:
    """The ERROR lines a server logs while CLIENTS readers of /numbers leave mid-stream."""
    counter = CountRequests(endless_app(route_class))
    with LessonServer(counter, name=name) as server:
        for _ in range(CLIENTS):
            read_a_bit_and_leave(server.url, "/numbers")
        settle(server, counter, CLIENTS, "/ping")
        return [line for line in server.logs if line.startswith("ERROR")]


def test_fastapi_sse_logs_a_traceback_when_a_client_leaves(errors: ErrorRecords) -> None:
    """What lesson 08 says about FastAPI 0.163.2: without the route class, clients that leave
    a stream with a backlog get 'Exception in ASGI application' with a BrokenResourceError."""
    logged = errors_after_clients_leave(APIRoute, "test-loud-disconnects")
    assert logged, "no traceback any more: FastAPI fixed its keepalive task, update lesson 08"
    assert all("Exception in ASGI application" in line for line in logged), logged
    assert set(errors.leaves()) == {"BrokenResourceError: "}, errors.leaves()


def test_quiet_route_logs_nothing_when_clients_leave(errors: ErrorRecords) -> None:
    assert errors_after_clients_leave(QuietDisconnectRoute, "test-quiet-disconnects") == []
    assert errors.records == []


def test_quiet_route_still_logs_real_errors(errors: ErrorRecords) -> None:
    counter = CountRequests(endless_app(QuietDisconnectRoute))
    with LessonServer(counter, name="test-quiet-errors") as server:
        with httpx.Client(timeout=10) as http, http.stream("GET", server.url + "/broken") as r:
            with pytest.raises(httpx.RemoteProtocolError):
                r.read()
        settle(server, counter, 1, "/ping")
    assert errors.leaves() == ["RuntimeError: the database went away"]


def test_lesson_08_app_logs_nothing_when_clients_leave_the_live_tail(errors: ErrorRecords) -> None:
    """`course serve 08 --solution`'s app: clients resume far back (a backlog) and leave."""
    app = load_exercise("08_database_streaming", "solutions").create_app()
    counter = CountRequests(app)
    with LessonServer(counter, name="test-08-disconnects") as server:
        for _ in range(CLIENTS):
            read_a_bit_and_leave(server.url, "/sensors/attic/live", 4000, "Last-Event-ID: 0\r\n")
        for path in ("/sensors/boiler/readings.ndjson", "/sensors/boiler/readings.csv"):
            read_a_bit_and_leave(server.url, path)
        settle(server, counter, CLIENTS + 2, "/docs")
        logged = [line for line in server.logs if line.startswith("ERROR")]
    assert logged == []
    assert errors.records == []
