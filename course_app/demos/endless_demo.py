"""An app with endless SSE streams, one per library: what the lesson server is tested with.

``tests/test_server.py`` and ``benchmarks/lesson_server.py`` need a server with a stream
that never ends on its own, to show that a stop is bounded even with a client connected.
Each stream counts 0, 1, 2, ... every ``interval`` seconds (not paced: the tests and the
benchmark want the same timing at any pace).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.sse import EventSourceResponse
from sse_starlette import EventSourceResponse as StarletteEventSourceResponse


def create_app(interval: float = 0.05) -> FastAPI:
    """``/native`` (``fastapi.sse``), ``/sse-starlette`` and a plain JSON ``/hello``."""
    app = FastAPI()

    @app.get("/native", response_class=EventSourceResponse)
    async def native() -> AsyncIterator[dict[str, int]]:
        n = 0
        while True:
            yield {"n": n}
            n += 1
            await asyncio.sleep(interval)

    @app.get("/sse-starlette")
    async def starlette_stream() -> StarletteEventSourceResponse:
        async def events() -> AsyncIterator[dict[str, str]]:
            n = 0
            while True:
                yield {"data": str(n)}
                n += 1
                await asyncio.sleep(interval)

        return StarletteEventSourceResponse(events())

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app
