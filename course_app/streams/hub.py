"""An in-process hub: one publisher, many SSE clients, a bounded queue per client.

    hub = Hub(queue_size=100, history=1000)
    hub.publish("notification", '{"title": "deploy done"}')    # every subscriber gets it

    with hub.subscribe(after=last_event_id) as subscription:    # replay, then live
        async for message in subscription:
            yield {"id": message.id or None, "event": message.event, "data": message.data}

**A slow subscriber cannot grow the server's memory.** Each subscriber has its own queue of
at most ``queue_size`` messages. When a client stops reading, its queue fills up and the
hub drops that subscriber's *oldest* message for each new one (drop-oldest); the next time
the subscriber reads, it first gets a ``lagged`` message, ``{"missed": N}``, saying how
many it lost, then the newest ones. The publisher never waits for anyone and the other
subscribers never notice. This suits feeds where the newest state matters most (prices,
presence, progress). Where every message matters, disconnect the slow subscriber instead
and let it resume from its ``Last-Event-ID`` (lesson 09's exercise writes that hub).

**Replay.** The last ``history`` published messages are kept with their ids (numbered 1, 2,
3, ... unless the publisher gives its own, such as a Redis stream entry id);
``subscribe(after=id)`` first returns the kept messages after that id, then live ones, with
no gap and no duplicate between the two. An id the hub no longer keeps (or never saw)
raises :class:`MissedEvents`: tell the client rather than pretend nothing was missed.

**Notices** (``notice()``) go to the current subscribers only: no id, not kept, never
replayed (``status`` events such as "Redis is down").

A hub lives on one event loop: publish, subscribe and iterate from that loop's thread.
It serves one process; ``uvicorn --workers 2`` runs two processes, hence two hubs that know
nothing of each other (lesson 09 connects them through Redis).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import NamedTuple

LAGGED = "lagged"


class Message(NamedTuple):
    id: str  # "" for a notice: not kept, not resumable
    event: str
    data: str  # the payload, already serialized (JSON)


class MissedEvents(LookupError):
    """The messages after the client's last id are not kept (any more): it cannot catch up."""

    def __init__(self, after: str) -> None:
        super().__init__(f"the messages after id {after!r} are no longer kept")
        self.after = after


class Subscription:
    """One subscriber: its replay backlog, then a bounded queue of live messages.

    Iterate it with ``async for``; leave with :meth:`close` (or use it in a ``with``
    block). ``__anext__`` is safe to cancel (``asyncio.timeout`` around it loses nothing).
    """

    def __init__(self, hub: Hub, queue_size: int, backlog: list[Message]) -> None:
        self._hub = hub
        self._maxsize = queue_size
        self._backlog = deque(backlog)
        self._queue: deque[Message] = deque()
        self._missed = 0
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def pending(self) -> int:
        """Messages waiting to be read (the replay backlog and the live queue)."""
        return len(self._backlog) + len(self._queue)

    @property
    def missed(self) -> int:
        """Messages dropped since the last ``lagged`` message was read."""
        return self._missed

    def _deliver(self, message: Message) -> None:
        """Called by the hub: queue ``message``, dropping the oldest one if the queue is full."""
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self._missed += 1
        self._queue.append(message)
        self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._backlog:
                return self._backlog.popleft()
            if self._missed:  # the gap comes before the messages still queued
                missed, self._missed = self._missed, 0
                return Message("", LAGGED, json.dumps({"missed": missed}))
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()  # nothing taken yet: a cancellation here loses nothing

    def close(self) -> None:
        """Leave the hub: no more messages; iteration ends once the queue is read. Idempotent."""
        self._closed = True
        self._hub._unsubscribe(self)
        self._wakeup.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Hub:
    """Fan-out in one process: bounded per-subscriber queues, drop-oldest, replay by id."""

    def __init__(self, queue_size: int = 100, history: int = 1000) -> None:
        if queue_size < 1 or history < 0:
            raise ValueError("queue_size must be at least 1 and history at least 0")
        self.queue_size = queue_size
        self._history: deque[Message] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self._counter = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def subscriptions(self) -> list[Subscription]:
        """The current subscriptions (a copy)."""
        return list(self._subscribers)

    @property
    def last_id(self) -> str | None:
        """The id of the newest kept message (None before the first)."""
        return self._history[-1].id if self._history else None

    def publish(self, event: str, data: str, id: str | None = None) -> Message:
        """Keep ``data`` for replay and queue it for every subscriber; never waits.

        ``id`` defaults to the next number; pass your own (a Redis stream entry id) to use
        the same ids as other processes.
        """
        if id is None:
            self._counter += 1
            id = str(self._counter)
        message = Message(id, event, data)
        self._history.append(message)
        self._fan_out(message)
        return message

    def notice(self, event: str, data: str) -> None:
        """Tell the current subscribers something that is not kept or replayed."""
        self._fan_out(Message("", event, data))

    def _fan_out(self, message: Message) -> None:
        for subscription in self._subscribers:
            subscription._deliver(message)

    def subscribe(self, after: str | None = None) -> Subscription:
        """A new subscriber; with ``after``, the kept messages after that id come first.

        Raises :class:`MissedEvents` if ``after`` is not among the kept messages.
        """
        backlog: list[Message] = []
        if after is not None:
            ids = [message.id for message in self._history]
            if after not in ids:
                raise MissedEvents(after)
            backlog = list(self._history)[ids.index(after) + 1 :]
        # No await between reading the history and joining: nothing published in between.
        subscription = Subscription(self, self.queue_size, backlog)
        self._subscribers.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription (at shutdown): each stream finishes what it has queued."""
        for subscription in list(self._subscribers):
            subscription.close()
