"""Chat answers that outlive their connection, kept in Redis Streams for every worker process.

Lesson 13's service runs each answer as a task of its own and lets any number of
connections read it: the POST that asked for it, and after a reload ``GET
/api/chat/{id}/stream``. Its exercise keeps the answers in the process's memory; this module
keeps them in Redis, for a service that runs as several worker processes (``uvicorn
--workers 4``, several containers), where the reload may reach another process than the one
generating. Both stores have the same methods::

    await store.start(chat_id, message_id, chunks)   # AnswerInProgress if one is active
    answer = await store.replay(chat_id, last_event_id)   # None: nothing kept (204)
    async for event_id, data in answer.chunks: ...    # from the start, or after the id
    await store.stop(chat_id)                         # True if an answer was stopped
    await store.delivered(chat_id, answer.message_id) # its end reached a client: forget it

Keys, for chat ``c`` and answer ``m`` (``prefix`` first):

- ``c:active`` = ``m`` while ``m`` is being generated. ``SET NX`` makes it the one
  claim on the chat across every process (a second answer is refused), with a TTL of
  ``max_seconds`` so a crashed worker cannot hold a chat for ever;
- ``c:latest`` = ``m``: the answer a reconnecting client gets;
- ``c:m:chunks``: a Redis stream, one entry per chunk (its entry id is the SSE ``id``,
  after ``m:``), then an ``end`` entry. Readers ``XRANGE``/``XREAD`` it from any process;
- ``c:m:stop``: a list. ``stop()`` on any process pushes to it; the generating process
  waits on it (``BLPOP``) and cancels its task, which closes the upstream request.

A finished answer is forgotten when a client has received its end (``delivered``), or
``linger`` seconds after it ended, whichever comes first: long enough for a client that
lost its connection to come back for the end, short enough that Redis holds only what
someone may still need. Answers live in the browser's history after that (the client
sends the whole history with every message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import NamedTuple

from course_app import ui_message_stream as ui
from course_app.redis_server import redis_client

logger = logging.getLogger("lesson.answers")

# What an answer that did not finish says at its end: shown to users, so no internals.
STOPPED = "stopped by the user"
INTERNAL = "Something went wrong on the server."
SHUT_DOWN = "The server restarted before the answer was complete. Send your message again."
INTERRUPTED = "The answer was interrupted. Send your message again."

_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# An answer's end, in one step: readers that see the end marker find the chat released.
# KEYS: chunks, latest, stop, active; ARGV: message id, linger in ms.
_END = """
redis.call('xadd', KEYS[1], '*', 'end', '1')
redis.call('pexpire', KEYS[1], ARGV[2])
if redis.call('get', KEYS[2]) == ARGV[1] then redis.call('pexpire', KEYS[2], ARGV[2]) end
redis.call('del', KEYS[3])
if redis.call('get', KEYS[4]) == ARGV[1] then redis.call('del', KEYS[4]) end
return 1
"""


class AnswerInProgress(Exception):
    """The chat already has an answer being generated."""


class StoreUnavailable(Exception):
    """The store cannot be reached (Redis is down): answer 503, try again later."""


class AnswerStream(NamedTuple):
    """One answer's chunks for one reader: ``(event_id, data)`` pairs, until its end."""

    message_id: str
    chunks: AsyncIterator[tuple[str, str]]


@contextlib.asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    from redis.exceptions import ConnectionError, TimeoutError

    try:
        yield
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


class RedisAnswerStore:
    """Active answers in Redis Streams: start, read, stop from any worker process."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "chat",
        linger: float = 60.0,
        max_seconds: int = 600,
        stop_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.linger = linger
        self.max_seconds = max_seconds
        self.stop_timeout = stop_timeout
        self._redis = redis_client(url)
        self._release = self._redis.register_script(_RELEASE)
        self._end_script = self._redis.register_script(_END)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # the answers this process generates
        self._stopping: set[str] = set()

    def _key(self, chat_id: str, *parts: str) -> str:
        return ":".join((self.prefix, chat_id, *parts))

    # -- generating ------------------------------------------------------------------------------

    async def start(self, chat_id: str, message_id: str, chunks: AsyncIterator[ui.Chunk]) -> None:
        """Claim the chat for this answer and generate it in a task; AnswerInProgress if taken."""
        async with _reachable():
            claimed = await self._redis.set(
                self._key(chat_id, "active"), message_id, nx=True, ex=self.max_seconds
            )
            if not claimed:
                await chunks.aclose()
                raise AnswerInProgress(chat_id)
            # The stream exists from now on (a "begin" entry), so a reader can join at once.
            # The TTLs are a safety net against a crashed worker; the end shortens them.
            ttl = self.max_seconds + int(self.linger) + 1
            chunks_key = self._key(chat_id, message_id, "chunks")
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(chat_id, "latest"), message_id, ex=ttl)
                pipe.xadd(chunks_key, {"begin": "1"})
                pipe.expire(chunks_key, ttl)
                await pipe.execute()
        task = asyncio.create_task(self._run(chat_id, message_id, chunks), name=f"answer-{chat_id}")
        self._tasks[message_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(message_id, None))

    async def _run(self, chat_id: str, message_id: str, chunks: AsyncIterator[ui.Chunk]) -> None:
        key = self._key(chat_id, message_id, "chunks")
        parts = ui.OpenParts()
        watcher = asyncio.create_task(self._wait_for_stop(chat_id, message_id))
        try:
            async with contextlib.aclosing(chunks):  # type: ignore[type-var]
                async for chunk in chunks:
                    await self._redis.xadd(key, {"data": ui.encode(parts.track(chunk))})
        except asyncio.CancelledError:
            stopped = message_id in self._stopping
            ending = ui.abort(STOPPED) if stopped else ui.error(SHUT_DOWN)
            await self._append_quietly(key, [*parts.end_all(), ending])
            raise
        except Exception:
            logger.exception("answer %s of chat %s failed", message_id, chat_id)
            await self._append_quietly(key, [*parts.end_all(), ui.error(INTERNAL)])
        finally:
            watcher.cancel()
            self._stopping.discard(message_id)
            await self._end(chat_id, message_id)

    async def _append_quietly(self, key: str, chunks: list[ui.Chunk]) -> None:
        try:
            for chunk in chunks:
                await self._redis.xadd(key, {"data": ui.encode(chunk)})
        except Exception:
            logger.exception("could not write the end of %s", key)

    async def _end(self, chat_id: str, message_id: str) -> None:
        """Mark the end, keep the answer ``linger`` seconds, release the chat. Never raises."""
        keys = [
            self._key(chat_id, message_id, "chunks"),
            self._key(chat_id, "latest"),
            self._key(chat_id, message_id, "stop"),
            self._key(chat_id, "active"),
        ]
        try:
            await self._end_script(keys=keys, args=[message_id, max(1, round(self.linger * 1000))])
        except Exception:  # the claim expires after max_seconds anyway
            logger.exception("could not end answer %s of chat %s", message_id, chat_id)

    async def _wait_for_stop(self, chat_id: str, message_id: str) -> None:
        """Wait for a stop request from any process, then cancel this answer's task."""
        stop_key = self._key(chat_id, message_id, "stop")
        while True:
            try:
                requested = await self._redis.blpop([stop_key], timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis went away: look again in a moment
                await asyncio.sleep(1)
                continue
            if requested:
                self._stopping.add(message_id)
                task = self._tasks.get(message_id)
                if task is not None:
                    task.cancel()
                return

    # -- reading ---------------------------------------------------------------------------------

    async def replay(self, chat_id: str, last_event_id: str | None = None) -> AnswerStream | None:
        """The chat's latest answer, from its start or after ``last_event_id``; None if gone.

        An id of another answer (or no id, or one this store never sent) means: from the start.
        """
        async with _reachable():
            message_id = await self._redis.get(self._key(chat_id, "latest"))
            if message_id is None:
                return None
            if not await self._redis.exists(self._key(chat_id, message_id, "chunks")):
                return None
        after = "0-0"
        if last_event_id:
            owner, _, entry = last_event_id.rpartition(":")
            if owner == message_id and _ENTRY_ID.fullmatch(entry):
                after = entry
        return AnswerStream(message_id, self._follow(chat_id, message_id, after))

    async def _follow(
        self, chat_id: str, message_id: str, after: str
    ) -> AsyncIterator[tuple[str, str]]:
        key = self._key(chat_id, message_id, "chunks")
        cursor = after
        while True:
            found = await self._redis.xread({key: cursor}, block=1000, count=500)
            if not found:  # a quiet second: is the answer still being generated?
                if await self._redis.get(self._key(chat_id, "active")) == message_id:
                    continue
                found = await self._redis.xread({key: cursor}, count=500)  # its last entries
                if not found:  # no end marker, and nobody generates it: its worker died
                    yield f"{message_id}:{cursor}", ui.encode(ui.error(INTERRUPTED))
                    return
            for _key, entries in found:
                for entry_id, fields in entries:
                    cursor = entry_id
                    if "end" in fields:
                        return
                    if "data" in fields:  # not the "begin" entry
                        yield f"{message_id}:{entry_id}", fields["data"]

    # -- stopping and forgetting -----------------------------------------------------------------

    async def stop(self, chat_id: str) -> bool:
        """Stop the chat's active answer, wherever it runs, and wait until it has ended.

        False when no answer is active (a finished one, or none): stopping is harmless.
        """
        async with _reachable():
            active = self._key(chat_id, "active")
            message_id = await self._redis.get(active)
            if message_id is None:
                return False
            stop_key = self._key(chat_id, message_id, "stop")
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(stop_key, "stop")
                pipe.expire(stop_key, self.max_seconds)
                await pipe.execute()
            # Its end comes as an "end" entry, written before the claim is released.
            key = self._key(chat_id, message_id, "chunks")
            newest = await self._redis.xrevrange(key, count=1)
            cursor = newest[0][0] if newest else "0-0"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.stop_timeout
            while loop.time() < deadline:
                found = await self._redis.xread({key: cursor}, block=200, count=500)
                for _key, entries in found or []:
                    for entry_id, fields in entries:
                        cursor = entry_id
                        if "end" in fields:
                            return True
                if await self._redis.get(active) != message_id:
                    return True  # ended, and already forgotten
            logger.warning("answer %s of chat %s did not stop in time", message_id, chat_id)
            return True

    async def delivered(self, chat_id: str, message_id: str) -> None:
        """A client received this answer's end: no reload needs it any more."""
        async with _reachable():
            if await self._redis.get(self._key(chat_id, "active")) == message_id:
                return  # still being generated (a replayed end cannot come before it exists)
            await self._release(keys=[self._key(chat_id, "latest")], args=[message_id])
            await self._redis.delete(self._key(chat_id, message_id, "chunks"))

    async def aclose(self) -> None:
        """At shutdown: end this process's answers (readers get an error part), close Redis."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._redis.aclose()
