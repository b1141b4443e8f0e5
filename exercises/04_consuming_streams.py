"""Lesson 04: resume a stream after a dropped connection, without losing or repeating events.

Server side: `ReplayBuffer` keeps the last events with increasing ids; `GET /events`
replays what a reconnecting client missed, from its `Last-Event-ID` header.
Client side: `read_resumable()` reconnects with `Last-Event-ID`, waits the server's
`retry` time between attempts, skips events it has already seen, and gives up after
`max_failures` failed attempts in a row.

Check your work: `course check 04` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 04`, open http://127.0.0.1:8000/ (the server drops the
connection every 3 events and the page reconnects by itself; `/?drop_after=0` never
drops), or `curl -N -H "Last-Event-ID: 7" http://127.0.0.1:8000/events`.
"""

import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, NamedTuple

import httpx
import httpx_sse
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from sse_starlette import EventSourceResponse

from course_app.runtime import html_page, pace

RETRY_MS = 100  # how long browsers (and our client) wait before reconnecting
EVENT_DELAY = 0.3  # seconds between two news events, scaled by the pace
EVENT_ID = re.compile(r"[0-9]{1,18}")  # not str.isdigit(): it accepts "²", which int() rejects


class Event(NamedTuple):
    id: int
    data: str


class ReplayBuffer:
    """The last ``maxlen`` events, numbered 1, 2, 3, ... in the order they were added."""

    def __init__(self, maxlen: int) -> None:
        self.events: deque[Event] = deque(maxlen=maxlen)
        self.last_id = 0

    def append(self, data: str) -> Event:
        """Add an event with the next id and return it."""
        # TODO: the next id is last_id + 1; append Event(id, data) to the deque (a full
        #       deque drops its oldest event by itself) and remember the id.
        raise NotImplementedError("TODO: write append()")

    def since(self, last_id: int | None) -> list[Event] | None:
        """The events after ``last_id`` (all of them for None).

        None when events after ``last_id`` have already been dropped from the buffer: the
        client cannot be brought up to date and must start over.
        """
        # TODO: None (no id yet) means everything in the buffer.
        # TODO: if the oldest buffered event's id is greater than last_id + 1, events the
        #       client needs are gone: return None.
        # TODO: otherwise return the events whose id is greater than last_id, in order.
        raise NotImplementedError("TODO: write since()")


class GaveUp(Exception):
    """read_resumable() stopped trying: too many failed attempts in a row, or a client error."""


DEFAULT_RETRY_MS = 1000  # until the server sends `retry:` (Chromium waits 3 s)


def read_resumable(
    url: str,
    *,
    client: httpx.Client,
    max_failures: int = 3,
    sleep: Callable[[float], None] = pace.sleep_sync,
) -> list[tuple[str, str]]:
    """Read ``news`` events from an SSE endpoint until ``done``, resuming after drops.

    Returns the (id, data) pairs of the news events, each id once, in the order received.
    Stops on a ``done`` event or an HTTP 204.

    An attempt *fails* when it brings no event with a new id: an error status, a refused
    or broken connection, or a stream that ends having sent only a hello or events already
    seen. An attempt that brings new events and then drops is not a failure. When the
    count of failed attempts in a row reaches ``max_failures``, raise GaveUp: with
    ``max_failures=3``, three attempts in a row that bring nothing (and a ``retry`` wait
    between two of them), then GaveUp. A 4xx status other than 429 raises GaveUp at once:
    asking again would get the same answer.
    """
    # TODO: loop: connect with httpx_sse.connect_sse(client, "GET", url, headers=...),
    #       sending {"Last-Event-ID": <id of the newest event you received>} once there is one.
    # TODO: look at event_source.response.status_code BEFORE iter_sse(): 204 -> return what
    #       you have; 4xx other than 429 -> raise GaveUp now, with the status in the message;
    #       anything else but 200 is a failed attempt: do not read its body, even when it is
    #       an event stream.
    # TODO: for each event: remember sse.retry (milliseconds) when it is set and not negative
    #       (httpx-sse parses "-1" too; lesson 03's parser would ignore it; 0 is valid: no
    #       wait); return on "done". An event whose id is not empty and not seen before is
    #       progress: remember its id, and collect (sse.id, sse.data) if it is "news". Skip
    #       events whose id you have already seen: a server may replay them.
    # TODO: after an attempt (the stream ended without "done", or an httpx.TransportError):
    #       no progress in it -> one more failure in a row, else the count starts again at 0.
    #       At max_failures failures in a row raise GaveUp("... gave up after N failed
    #       attempts in a row"), otherwise sleep(retry / 1000) and reconnect.
    raise NotImplementedError("TODO: write read_resumable()")


def create_app(total: int = 10, maxlen: int = 50) -> FastAPI:
    """A finished feed of ``total`` news events, replayed from a bounded buffer."""
    buffer = ReplayBuffer(maxlen)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Filled at startup, not at import: the module imports even before you solve it.
        for number in range(1, total + 1):
            buffer.append(json.dumps({"headline": f"news item {number}"}))
        yield

    app = FastAPI(title="Lesson 04: consuming streams and reconnecting", lifespan=lifespan)
    app.state.buffer = buffer

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return html_page("04_reconnect.html")

    @app.get("/events", response_model=None)
    async def events(
        last_event_id: Annotated[str | None, Header()] = None,
        drop_after: Annotated[int | None, Query(ge=1, le=1000)] = None,
    ) -> Response | EventSourceResponse:
        # Browsers send no header rather than an empty one; accept both as "from the start".
        if last_event_id and not EVENT_ID.fullmatch(last_event_id):
            raise HTTPException(400, "Last-Event-ID must be the id of an event from this stream")
        after = int(last_event_id) if last_event_id else None
        if after is not None and after >= buffer.last_id:
            return Response(status_code=204)  # nothing left: tells a browser to stop
        missed = buffer.since(after)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            yield {"retry": RETRY_MS, "comment": "connected"}
            if missed is None:  # too far behind: start over from what we still have
                yield {"event": "reset", "data": "{}"}
            sent = 0
            for event in missed if missed is not None else list(buffer.events):
                yield {"id": str(event.id), "event": "news", "data": event.data}
                sent += 1
                if drop_after is not None and sent >= drop_after and event.id < buffer.last_id:
                    return  # simulate a dropped connection: the client must resume
                await pace.sleep(EVENT_DELAY)
            yield {"event": "done", "data": "{}"}

        return EventSourceResponse(stream(), ping=15)

    return app


app = create_app()
