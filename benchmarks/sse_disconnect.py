"""Does the server stop a stream's generator when the client disconnects?

For each way of streaming SSE, N clients read a few events and hang up, one after another.
We count the generators that ended within a second of their client leaving, and the ones
still running 5 s after the last client left (a real leak, not just a slow notice).

Run: .venv/bin/python benchmarks/sse_disconnect.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import sse_starlette
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from course_app import LessonServer


def make_app(endings: list[str]) -> FastAPI:
    async def events(fmt: Callable[[int], Any]) -> AsyncIterator[Any]:
        try:
            for i in range(5000):
                yield fmt(i)
                await asyncio.sleep(0.001)
            endings.append("finished")
        except BaseException as exc:
            endings.append(type(exc).__name__)
            raise

    app = FastAPI()

    @app.get("/fastapi-sse", response_class=EventSourceResponse)
    async def native() -> AsyncIterator[ServerSentEvent]:
        async for event in events(lambda i: ServerSentEvent(data={"i": i})):
            yield event

    @app.get("/sse-starlette")
    async def starlette() -> sse_starlette.EventSourceResponse:
        return sse_starlette.EventSourceResponse(events(lambda i: {"data": str(i)}))

    @app.get("/streaming-response")
    async def plain() -> StreamingResponse:
        return StreamingResponse(events(lambda i: f"data: {i}\n\n"), media_type="text/event-stream")

    return app


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(f"{rounds} clients per route, each reads 3 events and disconnects")
    for path in ("/fastapi-sse", "/sse-starlette", "/streaming-response"):
        endings: list[str] = []
        slow = 0
        with LessonServer(make_app(endings), name="bench-disconnect") as server:
            for _ in range(rounds):
                before = len(endings)
                with (
                    httpx.Client(timeout=10) as client,
                    client.stream("GET", server.url + path) as response,
                ):
                    lines = response.iter_lines()
                    for _ in range(6):
                        next(lines)
                deadline = time.monotonic() + 1
                while len(endings) == before and time.monotonic() < deadline:
                    time.sleep(0.002)
                slow += len(endings) == before
            deadline = time.monotonic() + 5
            while len(endings) < rounds and time.monotonic() < deadline:
                time.sleep(0.01)
            leaked = rounds - len(endings)
        print(
            f"  {path:<20} ended within 1 s {rounds - slow:>4}/{rounds},"
            f" still running after 5 s {leaked:>4}  ({endings.count('CancelledError')} cancelled)"
        )


if __name__ == "__main__":
    main()
