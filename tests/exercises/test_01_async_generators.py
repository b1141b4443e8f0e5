"""Lesson 01: ticker(), take() and tracked(), including cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from course_app.runtime import pace

from task_helpers import cancel_and_wait


async def collect(source: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in source]


async def numbers(count: int, log: list[str] | None = None) -> AsyncIterator[int]:
    """A source that records when its cleanup runs."""
    try:
        for number in range(count):
            yield number
            await asyncio.sleep(0)
    finally:
        if log is not None:
            log.append("source cleaned up")


def test_ticker_yields_count_numbers(exercise: ModuleType) -> None:
    """ticker(3) yields 0, 1, 2

    Which numbers does `range(count)` give? ticker() is an `async def` with `yield` in
    it: does it yield each number, rather than return a list?
    """
    assert asyncio.run(collect(exercise.ticker(3, interval=0.01))) == [0, 1, 2]


def test_ticker_zero_and_negative(exercise: ModuleType) -> None:
    """ticker(0) yields nothing; ticker(-1) raises ValueError

    What does your loop do when count is 0? Where does the negative check go so it fails
    before the first item?
    """
    assert asyncio.run(collect(exercise.ticker(0))) == []
    with pytest.raises(ValueError):
        asyncio.run(collect(exercise.ticker(-1)))


def test_ticker_sleeps_only_between_items(
    exercise: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ticker(3, 0.25) awaits pace.sleep(0.25) twice: between items only

    Three items have two gaps between them. How can the loop tell the first item from
    the others, so that it waits only before items 1 and 2? Do you pass `interval` on?
    """
    calls: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        calls.append(seconds)

    monkeypatch.setattr(pace, "sleep", recording_sleep)
    assert asyncio.run(collect(exercise.ticker(3, interval=0.25))) == [0, 1, 2]
    assert calls == [0.25, 0.25]


def test_ticker_lets_other_tasks_run(exercise: ModuleType) -> None:
    """ticker awaits between items, so other tasks keep running (no time.sleep)

    Does every wait go through `await pace.sleep(...)`? A call without `await` (such as
    time.sleep or pace.sleep_sync) keeps the event loop to itself while it waits.
    """

    async def main() -> int:
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(heartbeat())
        await asyncio.sleep(0)
        beats = 0
        await collect(exercise.ticker(5, interval=0.001))
        task.cancel()
        return beats

    assert asyncio.run(main()) > 0


def test_take_limits(exercise: ModuleType) -> None:
    """take(source, 2) yields the first two items only

    Do you count the items you have yielded, and leave the loop once the count reaches
    n? What happens when the source has fewer than n items?
    """
    assert asyncio.run(collect(exercise.take(numbers(10), 2))) == [0, 1]
    assert asyncio.run(collect(exercise.take(numbers(1), 5))) == [0]


def test_take_zero_and_negative(exercise: ModuleType) -> None:
    """take(source, 0) yields nothing; a negative n raises ValueError

    With n == 0, does your loop still take one item before it checks the count? Where
    does the check for a negative n go?
    """
    assert asyncio.run(collect(exercise.take(numbers(3), 0))) == []
    with pytest.raises(ValueError):
        asyncio.run(collect(exercise.take(numbers(3), -1)))


def test_take_closes_the_source_right_away(exercise: ModuleType) -> None:
    """take() closes its source as soon as it stops, not whenever garbage is collected

    Leaving an `async for` with `break` does not close the source. Which method of an
    async generator runs its `finally` now, and which block of take() runs however
    take() ends?
    """

    async def main() -> list[str]:
        log: list[str] = []
        source = numbers(10, log)  # kept alive here, so only aclose() can run its cleanup
        items = await collect(exercise.take(source, 2))
        log.append(f"took {items}")
        return log

    assert asyncio.run(main()) == ["source cleaned up", "took [0, 1]"]


def test_take_does_not_wait_for_one_item_too_many(exercise: ModuleType) -> None:
    """take(source, 2) finishes after the second item, without asking the source for a third

    Where in the loop do you compare the count with n: before asking the source for the
    next item, or only when the next item arrives? The third item here never comes.
    """

    async def two_then_silence() -> AsyncIterator[int]:
        yield 0
        yield 1
        await asyncio.Event().wait()  # never set: a third item never comes
        yield 2

    async def main() -> list[int]:
        # A generous bound, so a take() that waits for a third item fails instead of hanging.
        return await asyncio.wait_for(collect(exercise.take(two_then_silence(), 2)), 5)

    try:
        items = asyncio.run(main())
    except TimeoutError:
        pytest.fail(
            "take(source, 2) never finished: after the second item it asked the source for"
            " a third one, which never came. Stop as soon as you have yielded n items."
        )
    assert items == [0, 1]


def test_take_closes_the_source_when_the_consumer_leaves(exercise: ModuleType) -> None:
    """take() closes its source when the consumer takes one item and then closes take()

    When the consumer calls aclose() on take(), GeneratorExit is raised at take()'s
    `yield`. Which part of take() still runs then, and does it close the source there?
    """

    async def main() -> list[str]:
        log: list[str] = []
        source = numbers(10, log)  # kept alive here, so only aclose() can run its cleanup
        stream = exercise.take(source, 5)
        first = await anext(stream)
        await stream.aclose()  # the consumer leaves: GeneratorExit at take()'s yield
        log.append(f"took {first}, then closed take()")
        return list(log)  # a copy: asyncio.run() closes leftover generators afterwards

    assert asyncio.run(main()) == ["source cleaned up", "took 0, then closed take()"]


def test_tracked_normal_end(exercise: ModuleType) -> None:
    """tracked logs opened, then closed: finished

    Is "opened" appended before the first item? Where does the "closed: finished" line
    go so that it runs only when the source ran out, and never after an exception?
    """
    log: list[str] = []
    assert asyncio.run(collect(exercise.tracked(numbers(2), log))) == [0, 1]
    assert log == ["opened", "closed: finished"]


def test_tracked_consumer_exits_early(exercise: ModuleType) -> None:
    """tracked logs closed: exited early when the consumer stops and closes it

    Which exception does aclose() raise at tracked()'s paused `yield`? It is not an
    Exception subclass: does an `except` clause of yours name it?
    """

    async def main() -> list[str]:
        log: list[str] = []
        stream = exercise.tracked(numbers(10), log)
        async for _ in stream:
            break
        await stream.aclose()
        return log

    assert asyncio.run(main()) == ["opened", "closed: exited early"]


def test_tracked_error_propagates(exercise: ModuleType) -> None:
    """tracked logs closed: error and lets the source's exception through

    An exception raised by the source comes out of your `async for`: do you catch it,
    log, and raise it again so the caller still sees it?
    """

    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ValueError("upstream broke")

    log: list[str] = []
    with pytest.raises(ValueError, match="upstream broke"):
        asyncio.run(collect(exercise.tracked(failing(), log)))
    assert log == ["opened", "closed: error"]


def test_tracked_cancellation_propagates(exercise: ModuleType) -> None:
    """tracked logs closed: cancelled and re-raises CancelledError (the task ends cancelled)

    task.cancel() raises asyncio.CancelledError at the `await` where the source waits.
    It is not an Exception subclass either: which clause catches it, and what must that
    clause do after logging so the task still ends cancelled?
    """

    async def main() -> tuple[bool, list[str]]:
        log: list[str] = []
        started = asyncio.Event()

        async def forever() -> AsyncIterator[int]:
            yield 0
            started.set()
            await asyncio.Event().wait()
            yield 1

        async def consume() -> None:
            async for _ in exercise.tracked(forever(), log):
                pass

        task = asyncio.create_task(consume())
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return await cancel_and_wait(task), log

    cancelled, log = asyncio.run(main())
    assert log == ["opened", "closed: cancelled"]
    assert cancelled, "the CancelledError was swallowed: the task finished instead"


def test_ticks_endpoint_streams_lines(exercise: ModuleType) -> None:
    """GET /ticks?count=3 streams three lines; count=-1 is a 422

    The route streams take(ticker(count, interval), count): do the ticker() and take()
    checks above pass? Try `course serve 01`, then
    `curl -N "http://127.0.0.1:8000/ticks?count=3"`.
    """
    with TestClient(exercise.app) as client:
        with client.stream("GET", "/ticks", params={"count": 3, "interval": 0}) as response:
            assert response.status_code == 200
            assert list(response.iter_lines()) == ["tick 0", "tick 1", "tick 2"]
        assert client.get("/ticks", params={"count": -1}).status_code == 422
