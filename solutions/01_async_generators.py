"""Lesson 01: async generators that pace, limit and clean up.

Three small building blocks that every stream in this course is made of. The app at the
bottom already streams with them.

Check your work: `course check 01` in a terminal, or the check cell in the notebook.
Stuck? `course hint 01` asks guiding questions about the checks that still fail.
Try it by hand: `course serve 01`, then `curl -N "http://127.0.0.1:8000/ticks?count=5"`.
"""

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated, TypeVar

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse

from course_app.runtime import pace

T = TypeVar("T")


async def ticker(count: int, interval: float = 0.5) -> AsyncIterator[int]:
    """Yield 0, 1, ..., count - 1, waiting ``interval`` seconds between two items."""
    # TODO: raise ValueError if count is negative.
    # TODO: yield the numbers. Between two items (not before the first, not after the
    #       last) wait with `await pace.sleep(interval)`: never `time.sleep`, which would
    #       freeze the event loop and every other stream with it.
    ### BEGIN SOLUTION
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    for number in range(count):
        if number:
            await pace.sleep(interval)
        yield number
    ### END SOLUTION


async def take(source: AsyncIterable[T], n: int) -> AsyncIterator[T]:
    """Yield at most ``n`` items of ``source``, then close it so its cleanup runs now."""
    # TODO: raise ValueError if n is negative.
    # TODO: yield items from `source`, and stop as soon as you have yielded n of them
    #       (n == 0: none). Don't ask the source for one more item to find out: it may
    #       never come.
    # TODO: in a `finally`, close the source: `await source.aclose()` if it has an `aclose`
    #       method (async generators do). `finally` also runs when the consumer closes
    #       take() at a `yield`. Breaking out of a loop does NOT close an async
    #       generator; without aclose() its cleanup waits for the garbage collector.
    ### BEGIN SOLUTION
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    try:
        if n == 0:
            return
        taken = 0
        async for item in source:
            yield item
            taken += 1
            if taken == n:
                break
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
    ### END SOLUTION


async def tracked(source: AsyncIterable[T], log: list[str]) -> AsyncIterator[T]:
    """Pass ``source`` through, logging "opened" and then exactly one "closed: <how>" line.

    <how> is "finished" (the source ran out), "exited early" (the consumer stopped and
    closed us), "cancelled" (the consuming task was cancelled) or "error" (the source
    raised).
    """
    # TODO: append "opened", then yield every item of source.
    # TODO: record how it ended: catch GeneratorExit, asyncio.CancelledError and Exception
    #       separately, append the matching "closed: ..." line and RE-RAISE every one of
    #       them (a swallowed CancelledError makes a cancelled task look finished).
    #       After a normal end, append "closed: finished".
    # TODO: never `yield` in an except or finally block that handles GeneratorExit: Python
    #       raises "RuntimeError: async generator ignored GeneratorExit".
    ### BEGIN SOLUTION
    log.append("opened")
    try:
        async for item in source:
            yield item
    except GeneratorExit:
        log.append("closed: exited early")
        raise
    except asyncio.CancelledError:
        log.append("closed: cancelled")
        raise
    except Exception:
        log.append("closed: error")
        raise
    log.append("closed: finished")
    ### END SOLUTION


app = FastAPI(title="Lesson 01: async generators")


@app.get("/ticks")
async def ticks(
    count: Annotated[int, Query(ge=0, le=1000)] = 5,
    interval: Annotated[float, Query(ge=0, le=5)] = 0.5,
) -> StreamingResponse:
    """``count`` lines, ``interval`` seconds apart: ``curl -N`` shows them arrive."""

    async def lines() -> AsyncIterator[str]:
        async for number in take(ticker(count, interval), count):
            yield f"tick {number}\n"

    return StreamingResponse(lines(), media_type="text/plain")
