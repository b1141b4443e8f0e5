"""Lesson 04: resume a stream after a dropped connection, without losing or repeating events.

Server side: `ReplayBuffer` keeps the last events with increasing ids; `GET /events`
replays what a reconnecting client missed, from its `Last-Event-ID` header.
Client side: `read_resumable()` reconnects with `Last-Event-ID`, waits the server's
`retry` time between attempts, and gives up after too many failures in a row.

Check your work: `course check 04` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 04`, open http://127.0.0.1:8000/ (the page reconnects by
itself), or `curl -N -H "Last-Event-ID: 7" http://127.0.0.1:8000/events`.
"""

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, NamedTuple

import httpx
import httpx_sse
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from sse_starlette import EventSourceResponse

from course_app import pace
from course_app.pages import html_page

RETRY_MS = 100  # how long browsers (and our client) wait before reconnecting


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
        ### BEGIN SOLUTION
        self.last_id += 1
        event = Event(self.last_id, data)
        self.events.append(event)
        return event
        ### END SOLUTION

    def since(self, last_id: int | None) -> list[Event] | None:
        """The events after ``last_id`` (all of them for None).

        None when events after ``last_id`` have already been dropped from the buffer: the
        client cannot be brought up to date and must start over.
        """
        # TODO: None (no id yet) means everything in the buffer.
        # TODO: if the oldest buffered event's id is greater than last_id + 1, events the
        #       client needs are gone: return None.
        # TODO: otherwise return the events whose id is greater than last_id, in order.
        ### BEGIN SOLUTION
        if last_id is None:
            return list(self.events)
        if self.events and self.events[0].id > last_id + 1:
            return None
        return [event for event in self.events if event.id > last_id]
        ### END SOLUTION


class GaveUp(Exception):
    """read_resumable() failed too many times in a row."""


def read_resumable(
    url: str,
    *,
    client: httpx.Client,
    max_failures: int = 3,
    sleep: Callable[[float], None] = pace.sleep_sync,
) -> list[tuple[str, str]]:
    """Read ``news`` events from an SSE endpoint until ``done``, resuming after drops.

    Returns (id, data) pairs. Stops on a ``done`` event or an HTTP 204; raises GaveUp
    after ``max_failures`` failed attempts in a row.
    """
    # TODO: loop: connect with httpx_sse.connect_sse(client, "GET", url, headers=...),
    #       sending {"Last-Event-ID": <last id seen>} once you have seen an id.
    # TODO: status 204: return what you have. Another non-200 status counts as a failure
    #       (check event_source.response.status_code BEFORE iter_sse(), which raises on a
    #       non-SSE content type).
    # TODO: for each event: remember sse.retry (milliseconds) when it is set and not
    #       negative (httpx-sse parses "-1" too; lesson 03's parser would ignore it), and
    #       sse.id when it is not empty; collect (sse.id, sse.data) for "news" events;
    #       return on "done". Only progress, an id you had not seen yet, resets the count
    #       of failures in a row: a server that says hello and then fails must not keep
    #       you reconnecting forever.
    # TODO: a stream that ends without "done", or an httpx.TransportError, is a failure:
    #       after more than max_failures in a row raise GaveUp("... gave up after N ..."),
    #       else sleep(retry / 1000) and reconnect.
    ### BEGIN SOLUTION
    received: list[tuple[str, str]] = []
    last_id = ""
    retry_ms = 1000
    failures = 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with httpx_sse.connect_sse(client, "GET", url, headers=headers) as source:
                status = source.response.status_code
                if status == 204:
                    return received
                if status == 200:
                    for sse in source.iter_sse():
                        if sse.retry is not None and sse.retry >= 0:
                            retry_ms = sse.retry
                        if sse.id and sse.id != last_id:  # progress: a new event
                            last_id = sse.id
                            failures = 0
                        if sse.event == "done":
                            return received
                        if sse.event == "news":
                            received.append((sse.id, sse.data))
        except httpx.TransportError:
            pass
        failures += 1
        if failures > max_failures:
            raise GaveUp(f"{url}: gave up after {max_failures} failed attempts in a row")
        sleep(retry_ms / 1000)
    ### END SOLUTION


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
        if last_event_id is not None and not last_event_id.isdigit():
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
                await pace.sleep(0.05)
            yield {"event": "done", "data": "{}"}

        return EventSourceResponse(stream(), ping=15)

    return app


app = create_app()
