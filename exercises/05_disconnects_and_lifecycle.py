"""Lesson 05: a stream that always gives back what it holds.

Each stream holds one connection from `OpenStreams` (a stand-in for a database pool) for
as long as it runs. Whatever ends it (the last event, a client that leaves, an error, a
client too slow to read, a server shutting down), the connection must be released,
exactly once, and cancellation must keep propagating.

Check your work: `course serve 05`, then `curl -N "http://127.0.0.1:8000/events"`, press
Ctrl+C, and `curl http://127.0.0.1:8000/stats` shows `{"open": 0}` again. Or run
`course check 05` / the notebook's check cell.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Query
from sse_starlette import EventSourceResponse

from course_app.runtime import pace

logger = logging.getLogger("lesson.lifecycle")


class OpenStreams:
    """Counts the connections streams hold right now; releasing one twice is a bug."""

    def __init__(self) -> None:
        self.open = 0
        self.peak = 0

    def acquire(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def release(self) -> None:
        if self.open <= 0:
            raise RuntimeError("released a connection that was not held")
        self.open -= 1


async def numbered_events(
    streams: OpenStreams, count: int | None = None, fail_at: int | None = None, size: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """Events 0, 1, 2, ... (``count`` of them, or forever), holding one connection."""
    # TODO: acquire a connection from `streams` before the first event.
    # TODO: yield {"id": str(n), "data": json.dumps({"n": n, "pad": "x" * size})} for
    #       n = 0, 1, ..., waiting `await pace.sleep(0.1)` between events; stop after
    #       `count` events (None: never); raise RuntimeError("the data source failed")
    #       when n == fail_at.
    # TODO: if asyncio.CancelledError arrives (the client left, or the server is shutting
    #       down), log it with logger.info(...) (a message with the word "cancelled" in
    #       it) and RE-RAISE it.
    # TODO: release the connection in `finally`, so it happens exactly once on every path.
    #       (A client too slow to read is dropped by send_timeout: sse-starlette then
    #       closes the generator, so GeneratorExit, not CancelledError, arrives at `yield`.)
    raise NotImplementedError("TODO: write numbered_events()")
    yield  # keeps this a generator; replace both lines


def create_app(send_timeout: float = 10.0) -> FastAPI:
    app = FastAPI(title="Lesson 05: disconnects and lifecycle")
    streams = OpenStreams()
    app.state.streams = streams

    @app.get("/events")
    async def events(
        count: Annotated[int | None, Query(ge=0, le=100_000)] = None,
        fail_at: Annotated[int | None, Query(ge=0)] = None,
        size: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> EventSourceResponse:
        # sse-starlette: its listener cancels the generator as soon as the client leaves;
        # send_timeout drops a client that stops reading; ping keeps proxies from closing
        # a quiet connection.
        return EventSourceResponse(
            numbered_events(streams, count, fail_at, size), ping=15, send_timeout=send_timeout
        )

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {"open": streams.open, "peak": streams.peak}

    return app


app = create_app()
