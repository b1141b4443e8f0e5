"""Numbered events that readers can follow, and resume after a ``Last-Event-ID``.

Lesson 04 builds a replay buffer by hand; later lessons use this one. It adds what a
long-running producer (a job, a chat answer) needs on top: readers that *wait* for new
events, and an end. Each event gets the next id (1, 2, 3, ...), which makes a natural SSE
``id``; the last ``maxlen`` events are kept::

    log = EventLog(maxlen=1000)
    log.append("progress", '{"percent": 10}')
    ...
    async for item in log.follow(after=last_event_id):   # replay, then live, until close()
        yield ServerSentEvent(raw_data=item.data, event=item.event, id=str(item.id))

``append`` and ``close`` must run on the event loop's thread (they wake the readers up);
from a worker thread, hand them over with ``anyio.from_thread.run_sync(log.append, ...)``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple


class LoggedEvent(NamedTuple):
    id: int
    event: str
    data: str


class EventsLost(LookupError):
    """The events after the reader's id were dropped: it cannot be brought up to date."""

    def __init__(self, after: int, oldest: int) -> None:
        super().__init__(f"events after {after} are gone (the oldest kept is {oldest})")
        self.after = after
        self.oldest = oldest


class EventLog:
    """The last ``maxlen`` events, numbered from 1, with readers that wait for more."""

    def __init__(self, maxlen: int = 1000) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._events: deque[LoggedEvent] = deque(maxlen=maxlen)
        self._last_id = 0
        self._closed = False
        self._changed = asyncio.Event()

    @property
    def last_id(self) -> int:
        """The id of the newest event (0 before the first)."""
        return self._last_id

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, event: str, data: str) -> LoggedEvent:
        """Add an event with the next id and wake the readers up."""
        if self._closed:
            raise RuntimeError("the event log is closed: no events can follow its end")
        self._last_id += 1
        item = LoggedEvent(self._last_id, event, data)
        self._events.append(item)
        self._wake()
        return item

    def close(self) -> None:
        """No more events: readers finish once they have the last one. Idempotent."""
        self._closed = True
        self._wake()

    def since(self, after: int | None) -> list[LoggedEvent]:
        """The kept events with an id above ``after`` (all kept events for None).

        Raises :class:`EventsLost` when some of them were already dropped.
        """
        if after is None:
            return list(self._events)
        if self._events and self._events[0].id > after + 1:
            raise EventsLost(after, self._events[0].id)
        return [item for item in self._events if item.id > after]

    async def follow(self, after: int | None = None) -> AsyncIterator[LoggedEvent]:
        """The events after ``after``, then each new one, until the log is closed."""
        cursor = after
        while True:
            changed = self._changed  # taken before reading, so no append is missed
            batch = self.since(cursor)
            for item in batch:
                cursor = item.id
                yield item
            if self._closed and (cursor or 0) >= self._last_id:
                return
            if not batch:
                await changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
