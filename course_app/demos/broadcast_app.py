"""Lesson 09's app: typed events fanned out to every client, in one process or through Redis.

    GET  /stream     SSE: init, then notification / message events (with ids), heartbeat
                     when idle; resumes after a Last-Event-ID header
    POST /messages   publish: {"event": "notification", "data": {"title": ..., "level": ...}}
                     or {"event": "message", "data": {"author": ..., "text": ...}}
    GET  /           a page that listens to each event type with addEventListener

Without ``redis_url`` (``$REDIS_URL`` for the module's ``app``) one in-process hub does the
fan-out: fine for one process, blind across ``uvicorn --workers 2``. With it, ``POST``
appends to a Redis stream (``XADD``, trimmed to ``history`` entries) and each process runs
one relay task that reads the stream (``XRANGE`` at startup, then ``XREAD BLOCK``) into its
own hub, with the stream entry ids as SSE ids: every worker sends every message with the
same id, so a client may resume on any worker. When Redis goes away, clients get a
``status`` event (and ``POST`` answers 503) until the relay is back; it then resumes from
the last entry it read, so nothing published meanwhile is lost.

Try it: ``course serve 09 --solution``; ``REDIS_URL=redis://127.0.0.1:6379/0 uvicorn
course_app.demos.broadcast_app:app --workers 2`` with a Redis running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from course_app.runtime import html_page
from course_app.services import redis_client
from course_app.streams import Hub, Message, MissedEvents, guard_requests

logger = logging.getLogger("lesson.broadcast")

STREAM_KEY = "lesson09:events"
MAX_BODY = 16 * 1024  # bytes; a bigger POST body gets 413 before it is parsed
MAX_ID_LENGTH = 64


# -- the events on the wire: one Pydantic model per type ------------------------------------


class Notification(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    level: Literal["info", "warning", "error"] = "info"


class ChatMessage(BaseModel):
    author: str = Field(min_length=1, max_length=50)
    text: str = Field(min_length=1, max_length=2000)


class Init(BaseModel):
    worker: int  # the process id: which worker holds this connection
    time: datetime


class Heartbeat(BaseModel):
    time: datetime


class Reset(BaseModel):
    after: str  # the Last-Event-ID whose followers are gone
    reason: str


class Status(BaseModel):
    redis: Literal["up", "down"]
    detail: str = ""


def now() -> datetime:
    """Aware UTC time. ``UTC`` is ``timezone.utc``; ``datetime.utcnow()`` is naive (no
    offset, so a browser reads it as local time) and deprecated since Python 3.12."""
    return datetime.now(UTC)


class PublishNotification(BaseModel):
    event: Literal["notification"]
    data: Notification


class PublishMessage(BaseModel):
    event: Literal["message"]
    data: ChatMessage


Publish = Annotated[PublishNotification | PublishMessage, Field(discriminator="event")]
PUBLISH = TypeAdapter(Publish)


# -- what the app needs from a hub (course_app.streams.hub.Hub, or the one lesson 09's exercise writes)


class Subscription(Protocol):
    def __aiter__(self) -> Subscription: ...
    async def __anext__(self) -> Message: ...
    def close(self) -> None: ...
    @property
    def pending(self) -> int: ...  # messages that __anext__ returns without waiting


class HubLike(Protocol):
    def publish(self, event: str, data: str, id: str | None = None) -> Message: ...
    def notice(self, event: str, data: str) -> None: ...
    def subscribe(self, after: str | None = None) -> Subscription: ...
    def close(self) -> None: ...


# -- Redis: one relay per process ------------------------------------------------------------


class RedisRelay:
    """Follows the Redis stream and publishes each entry into this process's hub."""

    def __init__(self, url: str, hub: HubLike, *, retry_every: float = 1.0) -> None:
        self.url = url
        self.hub = hub
        self.retry_every = retry_every
        self.up: bool | None = None  # None until the first attempt
        self.detail = ""
        self._client = redis_client(url)
        self._last_id: str | None = None  # the newest entry relayed; None: not loaded yet

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis.ConnectionError, TimeoutError, a restart...
                self._went_down(exc)
                await asyncio.sleep(self.retry_every)

    async def _follow(self) -> None:
        if self._last_id is None:  # startup: load what the stream keeps, then follow it
            entries = await self._client.xrange(STREAM_KEY, "-", "+")
            for entry_id, fields in entries:
                self.hub.publish(fields["event"], fields["data"], id=entry_id)
            self._last_id = entries[-1][0] if entries else "0-0"
        else:
            await self._client.ping()
        self._came_up()
        while True:
            # BLOCK waits up to 1 s for entries after the last one relayed: none is missed,
            # even the ones added while Redis was unreachable from here.
            found = await self._client.xread({STREAM_KEY: self._last_id}, block=1000, count=100)
            for _key, entries in found:
                for entry_id, fields in entries:
                    self.hub.publish(fields["event"], fields["data"], id=entry_id)
                    self._last_id = entry_id

    def _came_up(self) -> None:
        if self.up is False:
            logger.warning("Redis at %s is back; relaying from entry %s", self.url, self._last_id)
            self.hub.notice("status", Status(redis="up").model_dump_json())
        self.up, self.detail = True, ""

    def _went_down(self, exc: Exception) -> None:
        detail = str(exc) or type(exc).__name__
        if self.up is not False:
            logger.warning(
                "Redis at %s is unreachable (%s); retrying every %s s",
                self.url,
                detail,
                self.retry_every,
            )
            self.hub.notice("status", Status(redis="down", detail=detail).model_dump_json())
        self.up, self.detail = False, detail

    async def append(self, event: str, data: str, history: int) -> str:
        """XADD to the stream, trimmed to exactly ``history`` entries; returns the entry id."""
        return await self._client.xadd(
            STREAM_KEY, {"event": event, "data": data}, maxlen=history, approximate=False
        )

    async def close(self) -> None:
        await self._client.aclose()


# -- the app ----------------------------------------------------------------------------------

MAX_BATCH = 100  # messages sent in one write at most


@functools.lru_cache(maxsize=256)
def frame(message: Message) -> bytes:
    """One message as an SSE frame; no ``id:`` line for a notice (an empty id resets it).

    Cached: a message goes to every client, and is encoded once for all of them. (At most
    256 frames of at most MAX_BODY bytes or so: a few megabytes.)
    """
    event = ServerSentEvent(
        data=message.data, event=message.event, id=message.id or None, sep="\r\n"
    )
    return event.encode()


async def take_queued(subscription: Subscription, first: Message) -> tuple[list[Message], bool]:
    """``first`` and the messages already queued behind it; True if the subscription ended.

    One write for all of them instead of one per message: a client that fell behind during
    a burst catches up in a few writes, and each write costs the server about the same
    whatever its size (measured in ``benchmarks/fanout.py``).
    """
    batch = [first]
    while len(batch) < MAX_BATCH and getattr(subscription, "pending", 0):
        try:
            batch.append(await anext(subscription))  # returns at once: a message is queued
        except StopAsyncIteration:
            return batch, True
    return batch, False


def create_app(
    *,
    hub_factory: Callable[[], HubLike] = Hub,
    redis_url: str | None = None,
    heartbeat: float = 15.0,
    history: int = 1000,
    send_timeout: float = 30.0,
    redis_retry: float = 1.0,
) -> FastAPI:
    """The lesson's app. ``hub_factory`` makes the process's hub when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = hub_factory()
        app.state.hub = hub
        app.state.relay = None
        relay_task = None
        if redis_url:
            app.state.relay = RedisRelay(redis_url, hub, retry_every=redis_retry)
            relay_task = asyncio.create_task(app.state.relay.run(), name="redis-relay")
        try:
            yield
        finally:
            hub.close()  # open streams finish what they have queued and end
            if relay_task is not None:
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay_task
                await app.state.relay.close()

    app = FastAPI(title="Lesson 09: event types and fan-out", lifespan=lifespan)
    guard_requests(app, max_body=MAX_BODY)  # 413 over MAX_BODY, 422 for what is not JSON

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return html_page("09_events.html")

    @app.post("/messages", status_code=202)
    async def publish(request: Request) -> dict[str, Any]:
        body = await request.body()  # within MAX_BODY, UTF-8 JSON: guard_requests
        try:
            item = PUBLISH.validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        data = item.data.model_dump_json()
        relay: RedisRelay | None = request.app.state.relay
        if relay is None:
            message_id = request.app.state.hub.publish(item.event, data).id
        else:
            try:
                message_id = await relay.append(item.event, data, history)
            except Exception as exc:
                raise HTTPException(503, f"Redis is unreachable, try again later ({exc})") from None
        return {"id": message_id, "event": item.event, "worker": os.getpid()}

    @app.get("/stream", response_model=None)
    async def stream(
        request: Request, last_event_id: Annotated[str | None, Header()] = None
    ) -> EventSourceResponse:
        if last_event_id is not None and (
            len(last_event_id) > MAX_ID_LENGTH or not last_event_id.isprintable()
        ):
            raise HTTPException(400, "Last-Event-ID is not an id this stream sends")
        hub: HubLike = request.app.state.hub
        relay: RedisRelay | None = request.app.state.relay
        # Read before subscribing, with no await in between: a change of Redis's state
        # after this line reaches the new subscriber as a notice, never twice.
        redis_down = relay is not None and relay.up is False
        reset = None
        try:
            subscription = hub.subscribe(after=last_event_id or None)
        except MissedEvents:
            subscription = hub.subscribe()
            reset = Reset(after=last_event_id or "", reason="the events after it are not kept")

        async def events() -> AsyncIterator[dict[str, Any]]:
            try:
                init = Init(worker=os.getpid(), time=now())
                yield {"event": "init", "data": init.model_dump_json()}
                if reset is not None:
                    yield {"event": "reset", "data": reset.model_dump_json()}
                if redis_down and relay is not None:
                    down = Status(redis="down", detail=relay.detail)
                    yield {"event": "status", "data": down.model_dump_json()}
                while True:
                    try:
                        async with asyncio.timeout(heartbeat):
                            message = await anext(subscription)
                    except TimeoutError:
                        yield {
                            "event": "heartbeat",
                            "data": Heartbeat(time=now()).model_dump_json(),
                        }
                        continue
                    except StopAsyncIteration:
                        return  # the hub let this subscriber go: the client reconnects
                    batch, ended = await take_queued(subscription, message)
                    yield b"".join(frame(queued) for queued in batch)
                    if ended:
                        return
            finally:
                subscription.close()

        return EventSourceResponse(events(), ping=0, send_timeout=send_timeout)

    return app


app = create_app(redis_url=os.environ.get("REDIS_URL") or None)
