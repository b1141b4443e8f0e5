"""course_app.streams.event_log: numbered events, replay after an id, readers that wait, an end."""

from __future__ import annotations

import asyncio

import pytest

from course_app.streams import EventLog, EventsLost


def ids(items: list) -> list[int]:
    return [item.id for item in items]


def test_events_are_numbered_and_replayed_after_an_id() -> None:
    log = EventLog()
    assert [log.append("tick", str(n)).id for n in range(3)] == [1, 2, 3]
    assert ids(log.since(None)) == [1, 2, 3]
    assert ids(log.since(1)) == [2, 3]
    assert log.since(3) == []


def test_a_reader_too_far_behind_is_told_instead_of_skipping_silently() -> None:
    log = EventLog(maxlen=2)
    for n in range(5):
        log.append("tick", str(n))
    assert ids(log.since(3)) == [4, 5]
    with pytest.raises(EventsLost, match="events after 1 are gone"):
        log.since(1)


def test_follow_replays_then_waits_for_new_events_until_closed() -> None:
    async def scenario() -> list[int]:
        log = EventLog()
        log.append("a", "1")
        log.append("a", "2")
        seen: list[int] = []

        async def reader() -> None:
            async for item in log.follow(after=1):
                seen.append(item.id)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)
        log.append("a", "3")
        await asyncio.sleep(0)
        log.append("a", "4")
        log.close()
        await asyncio.wait_for(task, 5)
        return seen

    assert asyncio.run(scenario()) == [2, 3, 4]


def test_a_reader_of_a_closed_log_gets_the_rest_and_ends() -> None:
    async def scenario() -> list[int]:
        log = EventLog()
        for n in range(3):
            log.append("a", str(n))
        log.close()
        return [item.id async for item in log.follow(after=1)]

    assert asyncio.run(scenario()) == [2, 3]


def test_nothing_follows_the_end() -> None:
    log = EventLog()
    log.close()
    log.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        log.append("a", "late")


def test_many_readers_each_get_every_event() -> None:
    async def scenario() -> list[list[int]]:
        log = EventLog()
        readers = [asyncio.create_task(_collect(log)) for _ in range(10)]
        await asyncio.sleep(0)
        for n in range(50):
            log.append("a", str(n))
            if n % 7 == 0:
                await asyncio.sleep(0)
        log.close()
        return await asyncio.wait_for(asyncio.gather(*readers), 5)

    assert all(seen == list(range(1, 51)) for seen in asyncio.run(scenario()))


async def _collect(log: EventLog) -> list[int]:
    return [item.id async for item in log.follow()]
