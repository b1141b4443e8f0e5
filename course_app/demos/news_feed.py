"""Lesson 11's app under test: a small SSE news feed, correct or with one planted bug.

``GET /feed?count=N`` streams ``news`` events with ids 1..N, ``gap`` seconds apart (0.1 by
default), with a ``: ping`` comment every ``ping`` seconds (0.1) of a longer gap, then one
``done`` event. A client that reconnects with ``Last-Event-ID: 3`` gets 4..N; an id that is
not 1 to 9 ASCII digits is a 400 before the stream starts. ``fail_at=K`` makes the source
fail before event K: the stream then ends with one ``error`` event.
``app.state.open_streams`` counts the streams whose generator has not finished, so a test
can see that a client that leaves is cleaned up, and that the server is still producing
while the client reads.

The frames are written by hand on a ``StreamingResponse`` (not by an SSE library) so that
each bug can be planted exactly where real code gets it wrong::

    create_app()                       # correct
    create_app(bug="no_heartbeat")     # one of BUGS

Try it: ``course serve 11``, then ``curl -N "http://127.0.0.1:8000/feed?count=3&gap=1"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

logger = logging.getLogger("lesson.news_feed")
Sleep = Callable[[float], Awaitable[None]]

# Each bug, and what it looks like from outside. Lesson 11's exercise: tests that catch them.
BUGS: dict[str, str] = {
    "no_blank_line": "events are not ended by a blank line, so clients never dispatch them",
    "id_not_advanced": "every event carries the same id, so a reconnect replays events",
    "last_event_id_ignored": "a reconnecting client gets the whole feed again",
    "generator_not_closed": "a client that leaves is never cleaned up (cleanup after the loop)",
    "error_swallowed": "a failing source ends the stream with `done` instead of `error`",
    "no_heartbeat": "an idle stream sends nothing, and proxies cut it",
    "heartbeat_as_event": "heartbeats are empty `data:` events, which every client dispatches",
    "buffered": "the whole body is built before the first byte is sent",
}
# Two bugs are planted where the wrong kind of test cannot see them, so that only the
# technique the lesson teaches catches them:
# - heartbeat_as_event: an SSE parser shows an empty `data:` event and (after an id) a
#   comment alike (httpx-sse dispatches an empty `message` for both); the raw lines differ.
# - buffered: the body is built at once (the source answers at once), then sent at the
#   feed's usual pace, so the bytes and when they arrive are those of the correct feed; a
#   clock cannot tell, only the server's state can (the generator has already finished).
# ASCII digits only: str.isdigit() also accepts "²", which int() refuses (a 500). A real
# client can send that byte, and uvicorn decodes header bytes as latin-1. Nine digits at
# most: int() refuses more than 4300, and no feed has that many events.
LAST_EVENT_ID = re.compile(r"[0-9]{1,9}")
HEADLINES = ("Markets calm", "Rain later", "Team wins", "New park opens", "Bridge reopens")


class SourceFailed(RuntimeError):
    """The news source broke (``fail_at``)."""


def frame(data: dict, *, event: str, id: str | None = None, end: str = "\n\n") -> str:
    """One SSE event: ``event:``, optional ``id:``, one ``data:`` line of JSON, a blank line."""
    lines = [f"event: {event}"] + ([f"id: {id}"] if id is not None else [])
    return "\n".join([*lines, f"data: {json.dumps(data)}"]) + end


def create_app(bug: str | None = None, *, ping: float = 0.1) -> FastAPI:
    """The feed app; ``bug`` plants one of :data:`BUGS`; pings every ``ping`` seconds."""
    if bug is not None and bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; the bugs are {', '.join(BUGS)}")
    app = FastAPI(title="Lesson 11: the news feed under test")
    app.state.open_streams = 0
    app.state.bug = bug

    heartbeat = "data:\n\n" if bug == "heartbeat_as_event" else ": ping\n\n"

    async def idle(seconds: float, sleep: Sleep) -> AsyncIterator[str]:
        """Wait ``seconds``, with a heartbeat after each full ``ping`` interval of quiet.

        A gap no longer than ``ping`` has none: the next event shows the stream is alive.
        The number of heartbeats depends on ``seconds`` only, never on how late a sleep ends.
        """
        remaining = seconds
        while remaining > 0:
            step = min(ping, remaining)
            await sleep(step)
            remaining -= step
            if remaining > 1e-6 and bug != "no_heartbeat":  # float sums fall short
                yield heartbeat

    async def news(
        first: int, count: int, gap: float, fail_at: int | None, sleep: Sleep = asyncio.sleep
    ) -> AsyncIterator[str]:
        app.state.open_streams += 1
        end = "\n" if bug == "no_blank_line" else "\n\n"
        finished = False
        try:
            try:
                for n in range(first, count + 1):
                    if n > first:
                        async for comment in idle(gap, sleep):
                            yield comment
                    if n == fail_at:
                        raise SourceFailed(f"the source failed before event {n}")
                    event_id = "1" if bug == "id_not_advanced" else str(n)
                    headline = HEADLINES[(n - 1) % len(HEADLINES)]
                    yield frame({"n": n, "headline": headline}, event="news", id=event_id, end=end)
            except SourceFailed as exc:
                logger.warning("feed failed: %s", exc)
                if bug == "error_swallowed":
                    yield frame({"count": count}, event="done", end=end)
                else:
                    yield frame({"message": "The feed failed."}, event="error", end=end)
                finished = True
                return
            yield frame({"count": count}, event="done", end=end)
            finished = True
        finally:
            # The planted bug: cleanup that only runs when the loop ends normally.
            if bug != "generator_not_closed" or finished:
                app.state.open_streams -= 1

    async def buffered(stream: Callable[[Sleep], AsyncIterator[str]]) -> AsyncIterator[str]:
        """The planted bug: build every chunk first, then send each after its usual wait."""
        waits: list[float] = [0.0]

        async def note(seconds: float) -> None:  # the source answers at once: no waiting
            waits[-1] += seconds

        chunks = []
        async for chunk in stream(note):
            chunks.append(chunk)
            waits.append(0.0)
        for chunk, wait in zip(chunks, waits, strict=False):
            await asyncio.sleep(wait)
            yield chunk

    @app.get("/feed")
    async def feed(
        count: Annotated[int, Query(ge=1, le=100)] = 5,
        gap: Annotated[float, Query(ge=0, le=10)] = 0.1,
        fail_at: Annotated[int | None, Query(ge=1)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        first = 1
        if last_event_id and bug != "last_event_id_ignored":
            if not LAST_EVENT_ID.fullmatch(last_event_id):
                raise HTTPException(400, "Last-Event-ID must be an event id (1 to 9 digits 0-9)")
            first = int(last_event_id) + 1
        if bug == "buffered":
            stream = buffered(lambda sleep: news(first, count, gap, fail_at, sleep))
        else:
            stream = news(first, count, gap, fail_at)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return app


app = create_app()  # what `course serve 11` runs
