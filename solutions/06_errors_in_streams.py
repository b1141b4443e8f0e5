"""Lesson 06: make any event source a well-behaved stream.

`safe_events()` wraps an async source of SSE events (sse-starlette dicts) so the client
always learns how the stream ended: exactly one `done` after a normal end, exactly one
`error` event (a code and a safe message, never the exception's text) on a failure or a
stalled source, and nothing at all once the client has left. The source is always closed.

`report_stream()` checks what it can *before* streaming, while a real 404 is still possible.

Check your work: `course check 06` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 06`, then
`curl -N "http://127.0.0.1:8000/reports/daily/stream?fail_at=3"`.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

from course_app import pace

logger = logging.getLogger("lesson.errors")

Event = dict[str, Any]


class StreamError(BaseModel):
    """What the client learns about a failure: a code, a message safe to show, a retry hint."""

    code: str
    message: str
    retryable: bool


def error_event(code: str, message: str, *, retryable: bool) -> Event:
    """An `error` event whose data is the JSON of a StreamError (never an f-string)."""
    payload = StreamError(code=code, message=message, retryable=retryable)
    return {"event": "error", "data": payload.model_dump_json()}


DONE: Event = {"event": "done", "data": "{}"}


async def safe_events(source: AsyncIterator[Event], *, item_timeout: float) -> AsyncIterator[Event]:
    """The source's events, then exactly one terminal event; see the module docstring."""
    # TODO: pull events one at a time with `await anext(source)` inside
    #       `async with asyncio.timeout(item_timeout):`, and yield each one.
    # TODO: StopAsyncIteration means the source is finished: yield DONE once, then stop.
    # TODO: TimeoutError: log a warning, yield error_event("timeout", ..., retryable=True).
    #       Any other Exception: logger.exception(...) (the details stay in the server log),
    #       then yield error_event("internal", ..., retryable=False). The message must not
    #       contain str(exc). Stop after the error event.
    # TODO: let GeneratorExit and CancelledError through (they are not Exceptions: do not
    #       catch BaseException), and always `await source.aclose()` in a `finally`. No
    #       `yield` in that finally: the client may be gone.
    ### BEGIN SOLUTION
    try:
        while True:
            try:
                async with asyncio.timeout(item_timeout):
                    event = await anext(source)
            except StopAsyncIteration:
                break
            except TimeoutError:
                logger.warning("source stalled for more than %s s", item_timeout)
                yield error_event("timeout", "The data source stopped responding.", retryable=True)
                return
            except Exception:
                logger.exception("stream failed")
                yield error_event(
                    "internal", "Something went wrong on the server.", retryable=False
                )
                return
            yield event
        yield DONE
    finally:
        await source.aclose()
    ### END SOLUTION


REPORTS = {"daily": 6, "weekly": 10}
ITEM_TIMEOUT = 2.0  # seconds one row may take: a real limit, so not scaled by the pace


async def report_rows(name: str, fail_at: int | None, stall_at: int | None) -> AsyncIterator[Event]:
    """A pretend data source: rows of a report, with a failure or a stall on request."""
    for number in range(REPORTS[name]):
        if number == fail_at:
            raise ConnectionError("db.internal:5432 refused user 'reports' (password=hunter2)")
        if number == stall_at:
            await asyncio.Event().wait()  # hangs until cancelled
        yield {"event": "row", "data": json.dumps({"report": name, "row": number})}
        await pace.sleep(0.2)


app = FastAPI(title="Lesson 06: errors in streams")


@app.get("/reports/{name}/stream")
async def report_stream(
    name: str,
    fail_at: Annotated[int | None, Query(ge=0)] = None,
    stall_at: Annotated[int | None, Query(ge=0)] = None,
) -> EventSourceResponse:
    # TODO: an unknown report is a 404: raise HTTPException here, before streaming (once
    #       the first byte is out, the status is 200 whatever happens). FastAPI has already
    #       answered 422 for a bad `fail_at` or `stall_at`.
    # TODO: return an EventSourceResponse of safe_events() over report_rows(...), with
    #       item_timeout=ITEM_TIMEOUT.
    ### BEGIN SOLUTION
    if name not in REPORTS:
        raise HTTPException(status_code=404, detail=f"no report called {name!r}")
    source = report_rows(name, fail_at, stall_at)
    return EventSourceResponse(safe_events(source, item_timeout=ITEM_TIMEOUT))
    ### END SOLUTION
