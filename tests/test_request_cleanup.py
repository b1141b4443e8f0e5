"""course_app.streams.request_cleanup: a fastapi.sse route closes what it opened when the request ends.

The scenario is the one fastapi.sse gets wrong on its own: a client reads a few events,
stops reading (socket buffers fill, FastAPI's producer task blocks handing an event over),
then leaves. The cyclic garbage collector is off during these tests, so only a real close
can end a generator, not the collector happening to run.

Some tests assert FastAPI 0.163.2's behaviour on purpose (the route's generator left open,
a function-scoped stack closed before the first event): lesson 05 teaches it, and these
tests say when a FastAPI upgrade changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent

from course_app.runtime import LessonServer
from course_app.streams import RequestCleanup, request_exit_stack

BIG = "x" * 64_000  # a few events fill the socket buffers


RELEASED: dict[str, str] = {}  # tag -> "released", filled by the connection dependency


async def connection(tag: str) -> AsyncIterator[str]:
    """The idiomatic form: a dependency with yield that owns the resource."""
    try:
        yield tag
    finally:
        await asyncio.sleep(0.01)  # a release that awaits still completes
        RELEASED[tag] = "released"


Connection = Annotated[str, Depends(connection)]
# What lesson 05 warns against: the stack is closed before the generator's body runs.
FunctionScopedCleanup = Annotated[
    contextlib.AsyncExitStack, Depends(request_exit_stack, scope="function")
]


def make_app(endings: dict[str, str]) -> FastAPI:
    async def endless(tag: str) -> AsyncIterator[str]:
        try:
            while True:
                yield BIG
                await asyncio.sleep(0)
        except BaseException as exc:
            endings[tag] = type(exc).__name__
            raise

    app = FastAPI()

    @app.get("/bare", response_class=EventSourceResponse)
    async def bare(tag: str) -> AsyncIterator[ServerSentEvent]:
        async for data in endless(tag):
            yield ServerSentEvent(raw_data=data)

    @app.get("/with-cleanup", response_class=EventSourceResponse)
    async def with_cleanup(tag: str, cleanup: RequestCleanup) -> AsyncIterator[ServerSentEvent]:
        source = endless(tag)
        cleanup.push_async_callback(source.aclose)
        try:
            async for data in source:
                yield ServerSentEvent(raw_data=data)
        finally:
            endings[f"{tag} route"] = "finally ran"

    @app.get("/with-dependency", response_class=EventSourceResponse)
    async def with_dependency(tag: str, conn: Connection) -> AsyncIterator[ServerSentEvent]:
        async for data in endless(tag):
            yield ServerSentEvent(raw_data=data)

    @app.get("/function-scope", response_class=EventSourceResponse)
    async def function_scope(
        cleanup: FunctionScopedCleanup,
    ) -> AsyncIterator[ServerSentEvent]:
        cleanup.callback(endings.__setitem__, "function-scope", "callback ran")
        yield ServerSentEvent(data="only")

    @app.get("/short", response_class=EventSourceResponse)
    async def short(cleanup: RequestCleanup) -> AsyncIterator[ServerSentEvent]:
        cleanup.callback(endings.__setitem__, "short", "request ended")
        yield ServerSentEvent(data="only")

    return app


@pytest.fixture
def endings() -> dict[str, str]:
    return {}


@pytest.fixture
def server(endings: dict[str, str]) -> Iterator[LessonServer]:
    gc.disable()
    try:
        with LessonServer(make_app(endings), name="t-request-cleanup", grace=0.5) as running:
            yield running
    finally:
        gc.enable()


def writes_paused(server: LessonServer) -> bool:
    """uvicorn has paused writing to a connection: its buffers are full, the send blocks."""
    assert server._server is not None
    connections = list(server._server.server_state.connections)
    return any(getattr(getattr(c, "flow", None), "write_paused", False) for c in connections)


def read_stall_leave(server: LessonServer, path: str) -> None:
    with httpx.Client(timeout=10) as client, client.stream("GET", server.url + path) as response:
        data = (line for line in response.iter_lines() if line.startswith("data:"))
        for _ in range(3):
            next(data)
        # Connected, reading nothing, until the server's send blocks (the socket buffers
        # and uvicorn's write buffer are full, so uvicorn pauses writing); then leave.
        deadline = time.monotonic() + 10
        while not writes_paused(server):
            assert time.monotonic() < deadline, f"{path}: the server never had to wait to send"
            time.sleep(0.005)


def ended_within(endings: dict[str, str], tag: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while tag not in endings and time.monotonic() < deadline:
        time.sleep(0.02)
    return tag in endings


@pytest.mark.parametrize("attempt", range(3))
def test_cleanup_closes_the_generator_of_a_stalled_client(
    server: LessonServer, endings: dict[str, str], attempt: int
) -> None:
    """a client that stops reading and leaves: the registered aclose() ends the generator"""
    tag = f"cleanup-{attempt}"
    read_stall_leave(server, f"/with-cleanup?tag={tag}")
    assert ended_within(endings, tag, seconds=10), "the generator is still open"
    assert endings[tag] in {"GeneratorExit", "CancelledError"}


def test_fastapi_sse_alone_leaves_a_stalled_clients_generator_open(
    server: LessonServer, endings: dict[str, str]
) -> None:
    """FastAPI 0.163's behaviour that request_cleanup exists for; if this fails, FastAPI fixed it"""
    stuck = 0
    for attempt in range(3):  # one stuck generator in three tries proves it: stop there
        tag = f"bare-{attempt}"
        read_stall_leave(server, f"/bare?tag={tag}")
        stuck += not ended_within(endings, tag, seconds=1)
        if stuck:
            break
    assert stuck >= 1, "every bare generator ended: update lessons 05 and 10 and request_cleanup"


def test_the_stack_closes_after_a_stream_that_ends_normally(
    server: LessonServer, endings: dict[str, str]
) -> None:
    """callbacks on the request's stack run once the response has ended"""
    response = httpx.get(f"{server.url}/short", timeout=10)
    assert response.status_code == 200
    assert "data: " in response.text
    assert ended_within(endings, "short", seconds=10)


@pytest.mark.parametrize("attempt", range(3))
def test_a_yield_dependency_releases_for_a_stalled_client(
    server: LessonServer, endings: dict[str, str], attempt: int
) -> None:
    """the idiomatic form: a dependency with yield releases what it owns, even for a stuck route"""
    tag = f"dependency-{attempt}"
    RELEASED.pop(tag, None)
    read_stall_leave(server, f"/with-dependency?tag={tag}")
    assert ended_within(RELEASED, tag, seconds=10), "the connection was kept"


def test_the_routes_own_finally_still_waits_for_the_collector(
    server: LessonServer, endings: dict[str, str]
) -> None:
    """the stack closes what is registered on it, not the route's generator (FastAPI 0.163)"""
    stuck = 0
    for attempt in range(3):
        tag = f"route-{attempt}"
        read_stall_leave(server, f"/with-cleanup?tag={tag}")
        assert ended_within(endings, tag, seconds=10), "the registered source is still open"
        if not stuck:  # once one route's finally is seen stuck, waiting for more proves nothing
            stuck += not ended_within(endings, f"{tag} route", seconds=1)
    assert stuck >= 1, (
        "every route's finally ran: FastAPI closes the generator now; update lesson 05"
    )


def test_a_function_scoped_stack_never_runs_its_callbacks(
    server: LessonServer, endings: dict[str, str]
) -> None:
    """scope="function" closes the stack before the first event: keep RequestCleanup request-scoped"""
    response = httpx.get(f"{server.url}/function-scope", timeout=10)
    assert response.status_code == 200
    assert "data: " in response.text
    assert not ended_within(endings, "function-scope", seconds=1)
