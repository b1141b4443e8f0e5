"""Lesson 12's middleware demo: one streaming app behind four kinds of middleware.

``create_app(middleware)`` builds the same app behind one of:

- ``"none"``;
- ``"timing"``: the typical ``@app.middleware("http")`` timing middleware (Starlette's
  ``BaseHTTPMiddleware``): it logs when ``call_next`` returns;
- ``"body-log"``: a ``@app.middleware("http")`` that reads ``response.body_iterator`` to log
  the body, then answers with what it read (what "log every response" recipes do);
- ``"asgi"``: :class:`course_app.streams.StreamTiming`, the pure ASGI version.

Its routes: ``/story`` (a finite stream of ``count`` events), ``/ticks`` (an endless one)
and ``/queued`` (waits for a free slot that never comes, polling
``request.is_disconnected()`` to give up when its client leaves). ``app.state.events``
lists what happened in order (``"logged"``, ``"stream ended"``, ``"cleanup"``, ...), so a
lesson can show who came first without timing anything.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from course_app.runtime import pace
from course_app.streams import StreamRecord, StreamTiming

Middleware = Literal["none", "timing", "body-log", "asgi"]
MIDDLEWARES: tuple[Middleware, ...] = ("none", "timing", "body-log", "asgi")


def create_app(
    middleware: Middleware = "none", *, tick: float = 0.05, queue_wait: float = 2.0
) -> FastAPI:
    """The demo app behind ``middleware``. ``tick``: seconds between events (paced);
    ``queue_wait``: the longest ``/queued`` waits for its slot (real seconds)."""
    if middleware not in MIDDLEWARES:
        raise ValueError(f"middleware must be one of {MIDDLEWARES}, not {middleware!r}")
    app = FastAPI(title=f"Lesson 12: a stream behind {middleware!r} middleware")
    app.state.events = []  # ordered: what happened, for the lesson to show
    app.state.produced = 0  # events the generators have yielded
    app.state.cleanups = 0  # generators whose `finally` ran
    app.state.held = []  # body-log: bytes held before the first byte went out, per request
    app.state.records = []  # asgi: StreamTiming's records
    app.state.queued = []  # /queued: "client left" or "gave up waiting", per request

    def happened(what: str) -> None:
        app.state.events.append(what)

    if middleware == "timing":

        @app.middleware("http")
        async def timing(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            start = time.perf_counter()
            response = await call_next(request)  # returns when the headers are ready
            elapsed = time.perf_counter() - start
            happened(f"logged: {response.status_code} in {elapsed * 1000:.0f} ms")
            return response

    elif middleware == "body-log":

        @app.middleware("http")
        async def body_log(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            response = await call_next(request)
            body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
            app.state.held.append(len(body))
            happened(f"logged: {response.status_code}, {len(body)} bytes")
            return Response(body, response.status_code, dict(response.headers))

    elif middleware == "asgi":

        def logged(record: StreamRecord) -> None:
            happened(f"logged: {record.status}, {record.ended}")

        app.add_middleware(StreamTiming, records=app.state.records, on_record=logged)

    async def events(count: int | None) -> AsyncIterator[str]:
        n = 0
        try:
            while count is None or n < count:
                n += 1
                app.state.produced += 1
                yield f"id: {n}\ndata: event {n}\n\n"
                await pace.sleep(tick)
            happened("stream ended")
        finally:
            app.state.cleanups += 1
            happened("cleanup")

    @app.get("/story")
    async def story(count: int = 8) -> StreamingResponse:
        return StreamingResponse(events(count), media_type="text/event-stream")

    @app.get("/ticks")
    async def ticks() -> StreamingResponse:
        return StreamingResponse(events(None), media_type="text/event-stream")

    @app.get("/queued")
    async def queued(request: Request) -> StreamingResponse:
        # Before the stream starts: wait for a slot (here one that never frees up), and give
        # up early if the client leaves. The typical tutorial code's check, in a loop.
        deadline = time.monotonic() + queue_wait
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                app.state.queued.append("client left")
                return StreamingResponse(iter(()), media_type="text/event-stream")
            await anyio.sleep(0.02)
        app.state.queued.append("gave up waiting")
        return StreamingResponse(events(1), media_type="text/event-stream")

    return app
