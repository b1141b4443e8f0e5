"""Lesson 09: a hub that loses nothing: disconnect a slow subscriber, replay when it returns.

``course_app.streams.hub.Hub`` keeps a slow subscriber and drops its oldest messages (it then says
``lagged``). Here you write the other policy, for streams where every message counts (chat,
orders, notifications): a subscriber whose bounded queue is full is *disconnected*; its
client reconnects with ``Last-Event-ID`` and the hub replays what it missed from a bounded
history. Memory stays bounded either way: queue_size messages per subscriber at most, and
history messages in all.

The app around your hub is given: ``course_app.demos.broadcast_app`` (``GET /stream``, ``POST
/messages``, typed events, heartbeats). It fans out in one process, or across worker
processes through Redis when ``REDIS_URL`` is set: then every worker's hub receives every
message from Redis, with the Redis stream entry id as its id.

Check your work: ``course check 09`` in a terminal, or the check cell in the notebook.
Try it by hand: ``course serve 09``, open http://127.0.0.1:8000/ in two tabs and send a
message from one; or ``curl -N http://127.0.0.1:8000/stream`` and, in another terminal,
``curl -X POST http://127.0.0.1:8000/messages -H 'content-type: application/json'
-d '{"event": "message", "data": {"author": "ada", "text": "hi"}}'``.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque

from course_app.demos.broadcast_app import create_app
from course_app.streams import Message, MissedEvents


class Subscription:
    """One subscriber: the replayed messages first, then a bounded queue of live ones."""

    def __init__(self, hub: Hub, queue_size: int, backlog: list[Message]) -> None:
        self.hub = hub
        self.backlog = deque(backlog)  # replayed messages, oldest first
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=queue_size)
        self.closed = False
        self.too_slow = False  # set when the hub disconnected this subscriber

    @property
    def pending(self) -> int:
        """How many messages __anext__ can return without waiting (the app batches them)."""
        return len(self.backlog) + self.queue.qsize()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        """The next message: backlog first, then the queue; the end once closed."""
        # TODO: a closed subscription ends at once (raise StopAsyncIteration), even with
        #       messages still queued: its client resumes from its last id anyway.
        # TODO: otherwise the backlog comes first, oldest first; then wait for the queue.
        # TODO: close() wakes a reader waiting on an empty queue with a None: that is the
        #       end too.
        ### BEGIN SOLUTION
        if self.closed:
            raise StopAsyncIteration
        if self.backlog:
            return self.backlog.popleft()
        message = await self.queue.get()
        if message is None:
            raise StopAsyncIteration
        return message
        ### END SOLUTION

    def close(self) -> None:
        """Leave the hub and free the queue; a reader waiting in __anext__ wakes up."""
        if self.closed:
            return
        self.closed = True
        self.hub.subscriptions.discard(self)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Hub:
    """Fan-out in one process: bounded queues, slow subscribers disconnected, replay by id."""

    def __init__(self, queue_size: int = 100, history: int = 1000) -> None:
        self.queue_size = queue_size
        self.history: deque[Message] = deque(maxlen=history)
        self.subscriptions: set[Subscription] = set()
        self.counter = 0  # the last number given as an id

    @property
    def subscribers(self) -> int:
        return len(self.subscriptions)

    def publish(self, event: str, data: str, id: str | None = None) -> Message:
        """Keep the message for replay and offer it to every subscriber; never waits."""
        # TODO: without an id, the message gets the next number as its id: "1", "2", ...
        #       (with one, such as a Redis stream entry id, keep that id as it is).
        # TODO: keep it in the history (a deque with maxlen drops the oldest by itself),
        #       offer it to every subscriber with self._offer(), and return it.
        ### BEGIN SOLUTION
        if id is None:
            self.counter += 1
            id = str(self.counter)
        message = Message(id, event, data)
        self.history.append(message)
        for subscription in list(self.subscriptions):
            self._offer(subscription, message)
        return message
        ### END SOLUTION

    def notice(self, event: str, data: str) -> None:
        """Tell the current subscribers something that is not kept (no id, no replay)."""
        for subscription in list(self.subscriptions):
            self._offer(subscription, Message("", event, data))

    def _offer(self, subscription: Subscription, message: Message) -> None:
        """Queue ``message`` for one subscriber, or disconnect it when its queue is full."""
        # TODO: put the message in the subscriber's queue without waiting. A full queue
        #       means a client that does not keep up: mark it too_slow and close() it
        #       (which also removes it from the hub). publish() must never wait for it.
        ### BEGIN SOLUTION
        try:
            subscription.queue.put_nowait(message)
        except asyncio.QueueFull:
            subscription.too_slow = True
            subscription.close()
        ### END SOLUTION

    def subscribe(self, after: str | None = None) -> Subscription:
        """A new subscriber; with ``after``, the kept messages after that id come first.

        Raises MissedEvents when ``after`` is not in the history (too old, or unknown):
        the client must be told that it missed messages.
        """
        # TODO: with an `after` id, find it in the history: the messages after it are the
        #       backlog. Not there? raise MissedEvents(after).
        # TODO: create the Subscription with that backlog, add it to self.subscriptions and
        #       return it. subscribe() is a plain function: nothing can be published between
        #       reading the history and joining, so no message falls in a gap or comes twice.
        ### BEGIN SOLUTION
        backlog: list[Message] = []
        if after is not None:
            ids = [message.id for message in self.history]
            if after not in ids:
                raise MissedEvents(after)
            backlog = list(self.history)[ids.index(after) + 1 :]
        subscription = Subscription(self, self.queue_size, backlog)
        self.subscriptions.add(subscription)
        return subscription
        ### END SOLUTION

    def close(self) -> None:
        """End every subscription (the app does this when it shuts down)."""
        for subscription in list(self.subscriptions):
            subscription.close()


# The lesson's app with your hub: one hub per process; on Redis when REDIS_URL is set.
app = create_app(hub_factory=Hub, redis_url=os.environ.get("REDIS_URL") or None)
