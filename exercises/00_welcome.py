"""Lesson 00 warm-up: a countdown, streamed as Server-Sent Events.

Fill in `countdown()`; the app below already streams whatever it yields.
Check your work: `course check 00` in a terminal, or the check cell in the notebook.
Stuck? `course hint 00` asks guiding questions about the checks that still fail.
Try it by hand: `course serve 00`, then `curl -N "http://127.0.0.1:8000/countdown?start=3"`.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from course_app.runtime import pace


def countdown(start: int) -> Iterator[str]:
    """Yield "3", "2", "1", then "liftoff" for ``start=3``; just "liftoff" for 0."""
    # TODO: raise ValueError if start is negative (there is no countdown from -1).
    # TODO: yield str(start), str(start - 1), ..., "1", then "liftoff".
    raise NotImplementedError("TODO: write countdown()")
    yield  # keeps this a generator; replace both lines


app = FastAPI(title="Lesson 00: countdown")


@app.get("/countdown", response_class=EventSourceResponse)
async def countdown_stream(
    start: Annotated[int, Query(ge=0, le=60)] = 3,
) -> AsyncIterator[ServerSentEvent]:
    # Query(ge=0) answers a bad `start` with a 422 before the stream begins.
    for word in countdown(start):
        yield ServerSentEvent(raw_data=word)  # raw_data: plain text, not JSON
        await pace.sleep(0.3)
