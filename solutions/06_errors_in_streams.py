"""Lesson 06: retry a failing source while the client has received nothing.

The notebook's `safe_events()` reports the first failure of its one source. A source that
fails *before its first event* has sent the client nothing, so the server can quietly open
a fresh one instead: the client only sees the first row arrive a little later. Once a row
is out, a retry would send rows again, so from then on a failure ends the stream.

`retrying_events()` takes a *source factory* (a function that opens a new source each time
it is called) and ends every stream with exactly one terminal event: `done`, or one
`error` event whose code, message and `retryable` flag come from the `FAILURES` table
through `classify()`, never from the exception's text.

`report_stream()` checks what it can *before* streaming, while a real 404 is still possible.

Check your work: `course check 06` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 06`, then
`curl -N "http://127.0.0.1:8000/reports/daily/stream?refused=2"` (two refused connections,
retried: you see six rows) and `...?refused=2&fail_at=3` (a failure after three rows).
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

from course_app.runtime import pace

logger = logging.getLogger("lesson.errors")

Event = dict[str, Any]


class StreamError(BaseModel):
    """What the client learns about a failure: a code, a message safe to show, a retry hint."""

    code: str
    message: str
    retryable: bool


# What each kind of failure tells the client; `classify()` takes the first entry that fits.
FAILURES: dict[type[Exception], StreamError] = {
    TimeoutError: StreamError(
        code="timeout", message="The data source stopped responding.", retryable=True
    ),
    ConnectionError: StreamError(
        code="unavailable", message="The data source is unavailable.", retryable=True
    ),
}
# Everything else: a bug, most likely. Trying again will not fix it.
INTERNAL = StreamError(
    code="internal", message="Something went wrong on the server.", retryable=False
)


def error_event(error: StreamError) -> Event:
    """An `error` event whose data is the JSON of a StreamError (never an f-string)."""
    return {"event": "error", "data": error.model_dump_json()}


DONE: Event = {"event": "done", "data": "{}"}


def classify(exc: Exception) -> StreamError:
    """The StreamError of the first FAILURES entry that `exc` is an instance of, else INTERNAL."""
    # TODO: look the exception up in FAILURES (read the table each time: adding an entry
    #       must need no code change). A subclass counts: ConnectionRefusedError is a
    #       ConnectionError.
    ### BEGIN SOLUTION
    for kind, error in FAILURES.items():
        if isinstance(exc, kind):
            return error
    return INTERNAL
    ### END SOLUTION


async def retrying_events(
    open_source: Callable[[], AsyncIterator[Event]], *, attempts: int, item_timeout: float
) -> AsyncIterator[Event]:
    """The events of `open_source()`, then exactly one `done` or `error`.

    A failure before the source's first event is retried with a fresh source, up to
    `attempts` sources in all, if `classify()` calls it retryable. Any other failure ends
    the stream with one error event. Every source opened is closed, whatever happens.
    """
    # TODO: open a source with open_source() for each attempt, and pull its events one at
    #       a time, each within `item_timeout` seconds (a stall is a TimeoutError, and
    #       FAILURES already knows what to tell the client about it).
    # TODO: the source is finished: yield DONE once, and stop.
    # TODO: an Exception: classify it. If the error is retryable, nothing has been yielded
    #       yet and attempts are left, log a warning and go on with the next attempt.
    #       Otherwise log it with logger.exception() (the details stay in the server log),
    #       yield its error_event(), and stop.
    # TODO: close every source you opened, on every ending, with no `yield` while closing
    #       (the client may be gone). CancelledError and GeneratorExit are no failures to
    #       report or retry: let them through.
    ### BEGIN SOLUTION
    for attempt in range(1, attempts + 1):
        source = open_source()
        started = False
        try:
            while True:
                try:
                    async with asyncio.timeout(item_timeout):
                        event = await anext(source)
                except StopAsyncIteration:
                    yield DONE
                    return
                except Exception as exc:
                    error = classify(exc)
                    if error.retryable and not started and attempt < attempts:
                        logger.warning("attempt %d of %d failed: %r", attempt, attempts, exc)
                        break
                    logger.exception("stream failed (%s)", error.code)
                    yield error_event(error)
                    return
                started = True
                yield event
        finally:
            await source.aclose()
    ### END SOLUTION


REPORTS = {"daily": 6, "weekly": 10}
ATTEMPTS = 3
ITEM_TIMEOUT = 2.0  # seconds one row may take: a real limit, so not scaled by the pace


def report_opener(
    name: str, *, refused: int = 0, fail_at: int | None = None, stall_at: int | None = None
) -> Callable[[], AsyncIterator[Event]]:
    """Opens a pretend data source for a report; its first `refused` connections fail."""
    opened = 0

    async def rows() -> AsyncIterator[Event]:
        nonlocal opened
        opened += 1
        if opened <= refused:
            raise ConnectionRefusedError(
                "db.internal:5432 refused user 'reports' (password=hunter2)"
            )
        for number in range(REPORTS[name]):
            if number == fail_at:
                raise ConnectionResetError(
                    "db.internal:5432 reset (user 'reports', password=hunter2)"
                )
            if number == stall_at:
                await asyncio.Event().wait()  # hangs until cancelled
            yield {"event": "row", "data": json.dumps({"report": name, "row": number})}
            await pace.sleep(0.2)

    return rows


app = FastAPI(title="Lesson 06: errors in streams")


@app.get("/reports/{name}/stream")
async def report_stream(
    name: str,
    refused: Annotated[int, Query(ge=0)] = 0,
    fail_at: Annotated[int | None, Query(ge=0)] = None,
    stall_at: Annotated[int | None, Query(ge=0)] = None,
) -> EventSourceResponse:
    # TODO: an unknown report is a 404: raise HTTPException here, before streaming (once
    #       the first byte is out, the status is 200 whatever happens). FastAPI has already
    #       answered 422 for a bad `refused`, `fail_at` or `stall_at`.
    # TODO: return an EventSourceResponse of retrying_events() over
    #       report_opener(name, ...), with ATTEMPTS and ITEM_TIMEOUT.
    ### BEGIN SOLUTION
    if name not in REPORTS:
        raise HTTPException(status_code=404, detail=f"no report called {name!r}")
    opener = report_opener(name, refused=refused, fail_at=fail_at, stall_at=stall_at)
    return EventSourceResponse(
        retrying_events(opener, attempts=ATTEMPTS, item_timeout=ITEM_TIMEOUT)
    )
    ### END SOLUTION
