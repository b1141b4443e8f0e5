"""Does the server stop a stream's generator when the client disconnects?

For each way of streaming SSE, N clients read 3 events and hang up, one after another.
We count the generators that ended within a second of their client leaving, the ones
still open 5 s after the last client left, and how each one ended: `CancelledError` (the
disconnect cancelled it at an `await`), `GeneratorExit` (something called its `aclose()`,
or the garbage collector found it abandoned at a `yield`).

Without `--stalled`, the generator pauses only 1 ms between events, so it is often ahead
of its client: `fastapi.sse` then leaves it paused at its `yield` (its producer task is
cancelled while handing an event over, outside the generator), and the garbage collector,
not the disconnect, closes it (`GeneratorExit`). How many depends on the load on the
machine: 0 to 7 of 20 in our runs, 0 when it was idle.

With `--stalled`, events are 64 kB and each client stops reading for 0.5 s before it
leaves: the socket buffers fill and the server's send blocks, so `fastapi.sse` leaves every
generator paused at its `yield`, and only the garbage collector closes it, when it happens
to run. `/fastapi-sse+cleanup` is the remedy from `course_app.streams.request_cleanup`: the route
registers its source's `aclose()` on the request's exit stack. The generator counted there
is that source; the route's own generator still waits for the collector (lesson 05).

Run: .venv/bin/python benchmarks/sse_disconnect.py [N] [--stalled]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import sse_starlette
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from course_app.runtime import LessonServer
from course_app.streams import RequestCleanup

ROUTES = ("/fastapi-sse", "/fastapi-sse+cleanup", "/sse-starlette", "/streaming-response")


def make_app(endings: list[str], padding: str) -> FastAPI:
    async def events(fmt: Callable[[str], Any]) -> AsyncIterator[Any]:
        try:
            for i in range(5000):
                yield fmt(f"{i}{padding}")
                await asyncio.sleep(0.001)
            endings.append("finished")
        except BaseException as exc:
            endings.append(type(exc).__name__)
            raise

    app = FastAPI()

    @app.get("/fastapi-sse", response_class=EventSourceResponse)
    async def native() -> AsyncIterator[ServerSentEvent]:
        async for event in events(lambda data: ServerSentEvent(raw_data=data)):
            yield event

    @app.get("/fastapi-sse+cleanup", response_class=EventSourceResponse)
    async def native_cleanup(cleanup: RequestCleanup) -> AsyncIterator[ServerSentEvent]:
        source = events(lambda data: ServerSentEvent(raw_data=data))
        cleanup.push_async_callback(source.aclose)  # runs once the response has ended
        async for event in source:
            yield event

    @app.get("/sse-starlette")
    async def starlette() -> sse_starlette.EventSourceResponse:
        return sse_starlette.EventSourceResponse(events(lambda data: {"data": data}))

    @app.get("/streaming-response")
    async def plain() -> StreamingResponse:
        return StreamingResponse(
            events(lambda data: f"data: {data}\n\n"), media_type="text/event-stream"
        )

    return app


def read_and_leave(client: httpx.Client, url: str, stall: float) -> None:
    with client.stream("GET", url) as response:
        data = (line for line in response.iter_lines() if line.startswith("data:"))
        for _ in range(3):
            next(data)
        time.sleep(stall)  # still connected, reading nothing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=50, help="clients per route")
    parser.add_argument(
        "--stalled", action="store_true", help="64 kB events; clients stop reading 0.5 s first"
    )
    args = parser.parse_args()
    padding, stall = ("x" * 64_000, 0.5) if args.stalled else ("", 0.0)
    how = "stops reading for 0.5 s, " if args.stalled else ""
    print(f"{args.rounds} clients per route, each reads 3 events, {how}then disconnects")
    for path in ROUTES:
        endings: list[str] = []
        slow = 0
        with LessonServer(make_app(endings, padding), name="bench-disconnect") as server:
            for _ in range(args.rounds):
                before = len(endings)
                with httpx.Client(timeout=10) as client:
                    read_and_leave(client, server.url + path, stall)
                deadline = time.monotonic() + 1
                while len(endings) == before and time.monotonic() < deadline:
                    time.sleep(0.002)
                slow += len(endings) == before
            deadline = time.monotonic() + 5
            while len(endings) < args.rounds and time.monotonic() < deadline:
                time.sleep(0.01)
            ended = list(endings)  # before stopping the server, which cancels what is left
        still_open = args.rounds - len(ended)
        how_ended = ", ".join(f"{n} {name}" for name, n in sorted(Counter(ended).items()))
        print(
            f"  {path:<21} ended within 1 s {args.rounds - slow:>4}/{args.rounds},"
            f" still open after 5 s {still_open:>4}  ({how_ended or 'none ended'})"
        )


if __name__ == "__main__":
    main()
