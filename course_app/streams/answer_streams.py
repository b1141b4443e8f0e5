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
- ``c:m:chunks``: a Redis stream: a ``begin`` entry, one entry per chunk (its entry id is
  the SSE ``id``, after ``m:``), then an ``end`` entry. ``stop()`` on any process adds a
  ``stop`` entry; readers skip both kinds.

**Many readers, one connection (as lesson 09 teaches).** A blocking ``XREAD`` holds its
connection for its whole wait, so one per reader would need a connection per browser tab.
Instead each process runs one *follower* per active answer (``_Follower``): a task that
reads the answer's stream with ``XREAD BLOCK`` on one connection and keeps the entries in a
window shared by all of the process's readers of that answer (the newest ``window`` to
``1.25 * window`` entries: the bounded queue, one per answer rather than one per reader, so
a reader costs a position, not a copy). A reader:

1. reads what Redis keeps after its id (``XRANGE``, in pages of ``PAGE``), unless this
   process's follower already holds everything after that id (its window reaches back to
   it): the same entries with the same ids, without a round trip per reader. Measured
   with 1,000 readers joining at once on a busy machine, an ``XRANGE`` each was the
   bottleneck (redis-py parses replies in Python); a reader on a process without a
   follower, or behind the window, or resuming into trimmed history, reads Redis;
2. joins the follower and reads its window, skipping every entry id it already has: no gap
   (the follower reads every entry after the window's start, its *floor*, whenever the
   reader joins) and no duplicate (ids only grow).

The slow-reader policy: the follower never waits for a reader. A reader that falls behind
the start of the window (the window dropped entries it has not read) goes back to step 1,
catches up from Redis, and reads the window again. It never misses a chunk, and it costs no
memory while it is behind. The generating process's follower also sees ``stop`` entries (Stop from any
worker) and cancels the answer's task; every process's follower sees the ``end`` entry
("answer finished") and ends its readers.

**Connections per process, on purpose.** Three pools, each with a fixed size:

- followers: one connection per answer followed here (``max_followers``, 100 by default);
  beyond it a new answer or reader is refused with :class:`StoreBusy` (503), which names
  the limit;
- publishers (``write_connections``, 4): the generating tasks' ``XADD`` s, claims and ends.
  Readers never take these, so a reader that cannot be served never harms an answer;
- readers' short commands (``read_connections``, 4, the margin): ``replay()``'s lookup
  (readers of a chat arriving together share one), history pages, ``delivered``. A reader waits up to
  ``read_wait`` (30) seconds for one, then gets :class:`StoreBusy` (503) before its first
  byte, or an ``error`` chunk (:data:`BUSY`) mid-answer.

``stop()`` waits for the end as a reader does, so it takes a follower place too.

So a process holds at most ``max_followers + write_connections + read_connections``
connections (108 by default; Redis's ``maxclients`` is 10,000), and an answer with 1,000
readers in one process uses one follower connection, not 1,000. Running out is reported as
what it is (:class:`StoreBusy`, the pool's name and limit), never as "Redis is unreachable".

**Trimmed history.** With ``max_entries`` (or an operator's ``XTRIM``) Redis may drop an
answer's oldest entries. Before reading history a reader compares its id with the stream's
first entry (``XINFO STREAM``, in the same script as the ``XRANGE``): when entries were
removed and the first one kept is newer than its id, entries it has not read may be gone
(Redis 7.0 keeps no id of trimmed entries, so this errs on the safe side). The reader then
gets an ``error`` chunk (:data:`TRIMMED`) and its stream ends: the UI message stream
protocol has no "reset" chunk, and going on from the oldest entry kept would send deltas of
a text part whose ``text-start`` is gone (the SDK rejects them), so an error the user can
read, and a new message, is what it allows.

**One reader, one connection, two tasks.** Every reader is an open SSE response, so at
1,000 readers the response's own cost is most of the memory: :class:`LeanEventSourceResponse`
is sse-starlette's ``EventSourceResponse`` with the request's task and one listener instead
of four tasks (the heartbeat, ``send_timeout``, disconnect and shutdown handling kept).

A finished answer is forgotten when a client has received its end (``delivered``: no new
reader gets it; readers already reading have ``grace`` seconds to finish), or ``linger``
seconds after it ended, whichever comes first. Answers live in the browser's history after
that (the client sends the whole history with every message).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import re
import weakref
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.event import ensure_bytes
from starlette.types import Receive, Scope, Send

from course_app.services import PoolExhausted, redis_client
from course_app.streams import ui_message_stream as ui
from course_app.streams.shutdown import POLL_SECONDS as SHUTDOWN_POLL
from course_app.streams.shutdown import shutdown_requested

logger = logging.getLogger("lesson.answers")

# What an answer that did not finish says at its end: shown to users, so no internals.
STOPPED = "stopped by the user"
INTERNAL = "Something went wrong on the server."
SHUT_DOWN = "The server restarted before the answer was complete. Send your message again."
INTERRUPTED = "The answer was interrupted. Send your message again."
TRIMMED = "Part of this answer is no longer kept on the server. Send your message again."
BUSY = "The server is too busy to show this answer now. Reload in a moment."
UNAVAILABLE = "Lost the connection to the answer. Reload to try again."

PAGE = 200  # entries per XRANGE: what one reader holds at a time while replaying
FOLLOWER_PATIENCE = 10.0  # seconds a follower retries an unreachable Redis before giving up

_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# An answer's end, in one step: readers that see the end marker find the chat released.
# KEYS: chunks, latest, active; ARGV: message id, linger in ms.
_END = """
redis.call('xadd', KEYS[1], '*', 'end', '1')
redis.call('pexpire', KEYS[1], ARGV[2])
if redis.call('get', KEYS[2]) == ARGV[1] then redis.call('pexpire', KEYS[2], ARGV[2]) end
if redis.call('get', KEYS[3]) == ARGV[1] then redis.call('del', KEYS[3]) end
return 1
"""
# Stop: a "stop" entry in the answer's stream, only while it is generated (never after its
# end, never on a forgotten answer). KEYS: active, chunks; ARGV: message id.
_STOP = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return false end
return redis.call('xadd', KEYS[2], '*', 'stop', '1')
"""
# A page of an answer's history after an id, with what tells whether entries after that id
# were trimmed: {first kept id, entries removed so far, the page, the newest id ever added};
# false when it is gone.
# KEYS: chunks; ARGV: the id, count.
_HISTORY_BODY = """
if redis.call('exists', KEYS[1]) == 0 then return false end
local info = redis.call('xinfo', 'stream', KEYS[1])
local first, added, length, last = '0-0', 0, 0, '0-0'
for i = 1, #info, 2 do
  local name = info[i]
  if name == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
  if name == 'entries-added' then added = info[i + 1] end
  if name == 'length' then length = info[i + 1] end
  if name == 'last-generated-id' then last = info[i + 1] end
end
local page = redis.call('xrange', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {first, added - length, page, last}
"""
_HISTORY = "local function history(KEYS, ARGV)" + _HISTORY_BODY + "end\nreturn history(KEYS, ARGV)"
# What a new reader needs, in one small round trip: the chat's latest answer, whether it is
# being generated, and the newest id it ever had; false when no answer is kept.
# KEYS: latest, active; ARGV: the chunks key around the id (prefix, suffix).
_LOOKUP = """
local m = redis.call('get', KEYS[1])
if not m then return false end
local chunks = ARGV[1] .. m .. ARGV[2]
if redis.call('exists', chunks) == 0 then return false end
local info = redis.call('xinfo', 'stream', chunks)
local last = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
local generating = 0
if redis.call('get', KEYS[2]) == m then generating = 1 end
return {m, generating, last}
"""
# A client has the answer's end: no new reader gets it; readers still reading get `grace`.
# KEYS: active, latest, chunks; ARGV: message id, grace in ms.
_DELIVERED = """
if redis.call('get', KEYS[1]) == ARGV[1] then return 0 end
if redis.call('get', KEYS[2]) == ARGV[1] then redis.call('del', KEYS[2]) end
local ttl = redis.call('pttl', KEYS[3])
if ttl == -1 or ttl > tonumber(ARGV[2]) then redis.call('pexpire', KEYS[3], ARGV[2]) end
return 1
"""

EntryId = tuple[int, int]
T = TypeVar("T")


def _parse_id(text: str) -> EntryId:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class AnswerInProgress(Exception):
    """The chat already has an answer being generated."""


class StoreUnavailable(Exception):
    """The store cannot serve the request now (answer 503, try again later).

    Redis itself is unreachable; or, as :class:`StoreBusy`, this process's own limits are.
    """


class StoreBusy(StoreUnavailable):
    """This process has no Redis connection left for the request: its pool's limit is the
    cause, not Redis (the message names the pool and the limit). 503, try again later."""


class AnswerStream(NamedTuple):
    """One answer's chunks for one reader: ``(event_id, data)`` pairs, until its end."""

    message_id: str
    chunks: AsyncIterator[tuple[str, str]]


class _Entry(NamedTuple):
    id: EntryId
    entry_id: str  # as Redis writes it: "1700000000000-0"
    data: str | None  # a chunk's JSON; None for "begin" and "stop" entries
    end: bool


@contextlib.asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    from redis.exceptions import ConnectionError, TimeoutError

    try:
        yield
    except PoolExhausted as exc:  # a ConnectionError too: our limit, not Redis
        raise StoreBusy(str(exc)) from exc
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


class _Follower:
    """One answer's stream, read once for this process, shared by all of its local readers."""

    def __init__(self, store: RedisAnswerStore, chat_id: str, message_id: str) -> None:
        self.store = store
        self.chat_id = chat_id
        self.message_id = message_id
        self.key = store._key(chat_id, message_id, "chunks")
        self.entries: list[_Entry] = []  # the window, oldest first
        self.floor: EntryId = (0, 0)  # newest entry no longer in the window
        self.cursor = "0-0"  # newest entry read from Redis
        self.readers = 0
        self.generating = False  # this process generates the answer (it acts on "stop")
        self.done = False
        self.outcome: str | None = None  # an error for the readers: it ended without "end"
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def changed(self) -> asyncio.Event:
        """Set when entries arrive or the follower ends (a new event after each)."""
        return self._changed

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _publish(self, entries: list[_Entry]) -> None:
        self.entries.extend(entries)
        excess = len(self.entries) - self.store.window
        if excess > self.store.window // 4:  # drop in batches: a list's front is costly
            self.floor = self.entries[excess - 1].id
            del self.entries[:excess]
        self._wake()

    def _finish(self, outcome: str | None) -> None:
        if not self.done:
            self.done, self.outcome = True, outcome
            self._wake()

    def _idle(self) -> bool:
        return self.readers == 0 and not self.generating

    async def run(self) -> None:
        redis = self.store._follow
        active = self.store._key(self.chat_id, "active")
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        try:
            while not self.done:
                try:
                    if self.cursor == "0-0":  # trimmed before we came: the window starts later
                        await self._set_floor()
                    found = await redis.xread({self.key: self.cursor}, block=1000, count=500)
                    if not found:  # a quiet second
                        if self._idle():
                            return  # nobody reads it here any more
                        if self.generating or await redis.get(active) == self.message_id:
                            continue
                        found = await redis.xread({self.key: self.cursor}, count=500)
                        if not found:  # no end marker, and nobody generates it: it died
                            self._finish(INTERRUPTED)
                            return
                    failing_since = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis went away: retry for a while
                    now = loop.time()
                    if failing_since is None:
                        failing_since = now
                        logger.warning("following %s failed (%s); retrying", self.key, exc)
                    elif now - failing_since > FOLLOWER_PATIENCE:
                        self._finish(UNAVAILABLE)
                        return
                    await asyncio.sleep(0.5)
                    continue
                self._receive(found)
                if self._idle() and not self.done:
                    return
        except asyncio.CancelledError:
            self._finish(SHUT_DOWN)  # the store is closing: this process's readers end
            raise
        finally:
            if self.store._followers.get(self.key) is self:
                del self.store._followers[self.key]
            self._finish(None if self.done else INTERNAL)

    async def _set_floor(self) -> None:
        with contextlib.suppress(Exception):  # no stream yet: nothing was trimmed
            info = await self.store._follow.xinfo_stream(self.key)
            if info.get("entries-added", 0) > info.get("length", 0) and info.get("first-entry"):
                first = _parse_id(info["first-entry"][0])
                self.floor = max(self.floor, (first[0], first[1] - 1) if first[1] else first)

    def _receive(self, found: list[tuple[str, list[tuple[str, dict[str, str]]]]]) -> None:
        entries: list[_Entry] = []
        for _key, items in found:
            for entry_id, fields in items:
                self.cursor = entry_id
                if "stop" in fields and self.generating:
                    self.store._stop_requested(self.message_id)
                end = "end" in fields
                entries.append(_Entry(_parse_id(entry_id), entry_id, fields.get("data"), end))
                if end:
                    break
        self._publish(entries)
        if entries and entries[-1].end:
            self._finish(None)


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
        max_followers: int = 100,
        write_connections: int = 4,
        read_connections: int = 4,
        read_wait: float = 30.0,
        window: int = 1024,
        max_entries: int | None = None,
        grace: float = 2.0,
    ) -> None:
        if max_followers < 1 or window < 4:
            raise ValueError("max_followers must be at least 1 and window at least 4")
        self.url = url
        self.prefix = prefix
        self.linger = linger
        self.max_seconds = max_seconds
        self.stop_timeout = stop_timeout
        self.max_followers = max_followers
        self.window = window
        self.max_entries = max_entries
        self.grace = grace
        pid = os.getpid()  # in CLIENT LIST: whose connection it is (one pool set per process)
        self._writes = redis_client(
            url, max_connections=write_connections, wait=30.0, name=f"{prefix}-write-{pid}"
        )
        self._reads = redis_client(
            url, max_connections=read_connections, wait=read_wait, name=f"{prefix}-read-{pid}"
        )
        self._follow = redis_client(
            url, max_connections=max_followers, name=f"{prefix}-follow-{pid}"
        )
        self._release = self._reads.register_script(_RELEASE)
        self._lookup = self._reads.register_script(_LOOKUP)
        self._history_page = self._reads.register_script(_HISTORY)
        self._delivered = self._reads.register_script(_DELIVERED)
        self._end_script = self._writes.register_script(_END)
        self._stop_script = self._writes.register_script(_STOP)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # the answers this process generates
        self._cancellable: set[str] = set()  # ...still in their chunk loop
        self._stopping: set[str] = set()
        self._followers: dict[str, _Follower] = {}  # by chunks key
        self._reserved = 0  # follower slots promised to answers being started
        self._in_flight: dict[tuple[str, ...], asyncio.Future[Any]] = {}  # see _shared

    def _key(self, chat_id: str, *parts: str) -> str:
        return ":".join((self.prefix, chat_id, *parts))

    @property
    def followers(self) -> int:
        """The answers this process follows now (one Redis connection each)."""
        return len(self._followers)

    # -- followers -------------------------------------------------------------------------------

    def _busy(self) -> StoreBusy:
        limit = self.max_followers
        return StoreBusy(
            f"this process already follows {limit} answers, its limit (max_followers={limit}):"
            " one Redis connection each"
        )

    def _has_room(self, key: str) -> bool:
        return key in self._followers or len(self._followers) + self._reserved < self.max_followers

    def _follower(self, chat_id: str, message_id: str, *, reserved: bool = False) -> _Follower:
        """This process's follower of the answer, started if needed; StoreBusy at the limit."""
        key = self._key(chat_id, message_id, "chunks")
        follower = self._followers.get(key)
        if follower is None:
            if len(self._followers) + self._reserved - reserved >= self.max_followers:
                raise self._busy()
            follower = _Follower(self, chat_id, message_id)
            self._followers[key] = follower
            follower.task = asyncio.create_task(follower.run(), name=f"follow-{key}")
        return follower

    def _stop_requested(self, message_id: str) -> None:
        """A follower saw a "stop" entry of an answer this process generates: cancel it."""
        task = self._tasks.get(message_id)
        if (
            task is not None
            and message_id in self._cancellable
            and message_id not in self._stopping
        ):
            self._stopping.add(message_id)
            task.cancel()

    # -- generating ------------------------------------------------------------------------------

    async def start(self, chat_id: str, message_id: str, chunks: AsyncIterator[ui.Chunk]) -> None:
        """Claim the chat for this answer and generate it in a task; AnswerInProgress if taken.

        StoreBusy (before anything is claimed) when this process cannot follow one more answer.
        """
        chunks_key = self._key(chat_id, message_id, "chunks")
        if not self._has_room(chunks_key):
            await chunks.aclose()  # type: ignore[attr-defined]
            raise self._busy()
        self._reserved += 1  # the follower below cannot be refused after the claim
        try:
            async with _reachable():
                claimed = await self._writes.set(
                    self._key(chat_id, "active"), message_id, nx=True, ex=self.max_seconds
                )
                if not claimed:
                    raise AnswerInProgress(chat_id)
                # The stream exists from now on (a "begin" entry), so a reader can join at
                # once. The TTLs are a safety net against a crashed worker; the end shortens them.
                ttl = self.max_seconds + int(self.linger) + 1
                async with self._writes.pipeline(transaction=True) as pipe:
                    pipe.set(self._key(chat_id, "latest"), message_id, ex=ttl)
                    pipe.xadd(chunks_key, {"begin": "1"})
                    pipe.expire(chunks_key, ttl)
                    await pipe.execute()
            follower = self._follower(chat_id, message_id, reserved=True)
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        finally:
            self._reserved -= 1
        follower.generating = True
        task = asyncio.create_task(
            self._run(chat_id, message_id, chunks, follower), name=f"answer-{chat_id}"
        )
        self._tasks[message_id] = task
        self._cancellable.add(message_id)
        task.add_done_callback(lambda _: self._tasks.pop(message_id, None))

    async def _xadd(self, key: str, data: str) -> None:
        if self.max_entries is None:
            await self._writes.xadd(key, {"data": data})
        else:
            await self._writes.xadd(key, {"data": data}, maxlen=self.max_entries, approximate=False)

    async def _run(
        self,
        chat_id: str,
        message_id: str,
        chunks: AsyncIterator[ui.Chunk],
        follower: _Follower,
    ) -> None:
        key = self._key(chat_id, message_id, "chunks")
        parts = ui.OpenParts()
        try:
            try:
                async with contextlib.aclosing(chunks):  # type: ignore[type-var]
                    async for chunk in chunks:
                        await self._xadd(key, ui.encode(parts.track(chunk)))
            finally:
                self._cancellable.discard(message_id)  # a late "stop" must not cut the end
        except asyncio.CancelledError:
            stopped = message_id in self._stopping
            ending = ui.abort(STOPPED) if stopped else ui.error(SHUT_DOWN)
            await self._append_quietly(key, [*parts.end_all(), ending])
            raise
        except Exception:
            logger.exception("answer %s of chat %s failed", message_id, chat_id)
            await self._append_quietly(key, [*parts.end_all(), ui.error(INTERNAL)])
        finally:
            self._stopping.discard(message_id)
            await self._end(chat_id, message_id)
            follower.generating = False  # it reads on to the end entry, for its readers

    async def _append_quietly(self, key: str, chunks: list[ui.Chunk]) -> None:
        try:
            for chunk in chunks:
                await self._xadd(key, ui.encode(chunk))
        except Exception:
            logger.exception("could not write the end of %s", key)

    async def _end(self, chat_id: str, message_id: str) -> None:
        """Mark the end, keep the answer ``linger`` seconds, release the chat. Never raises."""
        keys = [
            self._key(chat_id, message_id, "chunks"),
            self._key(chat_id, "latest"),
            self._key(chat_id, "active"),
        ]
        try:
            await self._end_script(keys=keys, args=[message_id, max(1, round(self.linger * 1000))])
        except Exception:  # the claim expires after max_seconds anyway
            logger.exception("could not end answer %s of chat %s", message_id, chat_id)

    # -- reading ---------------------------------------------------------------------------------

    async def replay(self, chat_id: str, last_event_id: str | None = None) -> AnswerStream | None:
        """The chat's latest answer, from its start or after ``last_event_id``; None if gone.

        An id of another answer (or no id, or one this store never sent) means: from the start.
        StoreBusy when the answer is being generated and this process cannot follow it.
        """
        found = await self._shared(("lookup", chat_id), self._look_up(chat_id))
        if not found:
            return None
        message_id, generating, newest = found
        if generating and not self._has_room(self._key(chat_id, message_id, "chunks")):
            raise self._busy()  # a 503 before the first byte, rather than an error chunk
        after = "0-0"
        if last_event_id:
            owner, _, entry = last_event_id.rpartition(":")
            # Only an id of this answer that it has reached: a higher one would wait for ever.
            if owner == message_id and _ENTRY_ID.fullmatch(entry):
                if _parse_id(entry) <= _parse_id(newest):
                    after = entry
        return AnswerStream(message_id, self._read(chat_id, message_id, after))

    async def _look_up(self, chat_id: str) -> list[str] | None:
        async with _reachable():
            return await self._lookup(
                keys=[self._key(chat_id, "latest"), self._key(chat_id, "active")],
                args=[self._key(chat_id, ""), ":chunks"],
            )

    async def _shared(self, what: tuple[str, ...], command: Coroutine[Any, Any, T]) -> T:
        """Run ``command`` once for every caller that asks for the same thing meanwhile.

        1,000 readers of one chat arriving together would queue 1,000 identical lookups
        for the readers' few connections (measured: some waited over 30 s on a busy
        machine); they share the one in flight instead. Its answer is as fresh as theirs
        would be: the lookup started while their requests were already open.
        """
        running = self._in_flight.get(what)
        if running is not None:
            command.close()
            return await asyncio.shield(running)
        task = asyncio.ensure_future(command)
        self._in_flight[what] = task
        task.add_done_callback(lambda _: self._in_flight.pop(what, None))
        return await asyncio.shield(task)

    def _page(self, found: list[object], after: str) -> tuple[str, list[_Entry]]:
        """A history page: ("ok" | "trimmed", entries)."""
        first, removed, items, _last = found
        if int(removed) > 0 and _parse_id(str(first)) > _parse_id(after):  # type: ignore[call-overload]
            return "trimmed", []  # entries after `after` may be among those removed
        entries = []
        for entry_id, flat in items:  # type: ignore[attr-defined]
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            end = "end" in fields
            entries.append(_Entry(_parse_id(entry_id), entry_id, fields.get("data"), end))
        return "ok", entries

    async def _history(self, key: str, after: str) -> tuple[str, list[_Entry]]:
        """A page of entries after ``after`` from Redis: ("ok" | "trimmed" | "gone", entries)."""
        async with _reachable():
            found = await self._history_page(keys=[key], args=[after, PAGE])
        return ("gone", []) if found is None else self._page(found, after)

    async def _read(
        self, chat_id: str, message_id: str, after: str
    ) -> AsyncIterator[tuple[str, str]]:
        """Redis's history after ``after``, then the local follower's entries, to the end."""
        key = self._key(chat_id, message_id, "chunks")
        cursor, cursor_id = _parse_id(after), after
        follower: _Follower | None = None

        def ending(text: str) -> tuple[str, str]:
            return f"{message_id}:{cursor_id}", ui.encode(ui.error(text))

        try:
            local = self._followers.get(key)
            if local is not None and cursor >= local.floor:
                follower = local  # its window holds (or will read) all we need: skip 1
                follower.readers += 1
            while True:
                # 1. what Redis keeps after the cursor, page by page
                while follower is None or cursor < follower.floor:
                    try:
                        status, entries = await self._history(key, cursor_id)
                    except StoreUnavailable as exc:
                        logger.warning("a reader of %s could not read its history: %s", key, exc)
                        yield ending(BUSY if isinstance(exc, StoreBusy) else UNAVAILABLE)
                        return
                    if status != "ok":
                        yield ending(TRIMMED)
                        return
                    for entry in entries:
                        cursor, cursor_id = entry.id, entry.entry_id
                        if entry.end:
                            return
                        if entry.data is not None:
                            yield f"{message_id}:{entry.entry_id}", entry.data
                    if len(entries) < PAGE:
                        break
                if follower is None:
                    try:
                        follower = self._follower(chat_id, message_id)
                    except StoreBusy as exc:
                        logger.warning("a reader of %s was refused: %s", key, exc)
                        yield ending(BUSY)
                        return
                    follower.readers += 1
                # 2. live, from the follower's window. It holds (or will read) every entry
                # after its floor, so a reader at or past the floor misses nothing; one
                # behind it (it joined late, or read too slowly) goes back to 1.
                while cursor >= follower.floor:
                    window = follower.entries
                    index = bisect.bisect_right(window, cursor, key=lambda e: e.id)
                    if index < len(window):
                        entry = window[index]
                        cursor, cursor_id = entry.id, entry.entry_id
                        if entry.end:
                            return
                        if entry.data is not None:
                            yield f"{message_id}:{entry.entry_id}", entry.data
                        continue
                    if follower.done:
                        if follower.outcome is not None:
                            yield ending(follower.outcome)
                        return
                    await follower.changed().wait()
        finally:
            if follower is not None:
                follower.readers -= 1

    # -- stopping and forgetting -----------------------------------------------------------------

    async def stop(self, chat_id: str) -> bool:
        """Stop the chat's active answer, wherever it runs, and wait until it has ended.

        False when no answer is active (a finished one, or none): stopping is harmless.
        """
        active = self._key(chat_id, "active")
        async with _reachable():
            message_id = await self._writes.get(active)
            if message_id is None:
                return False
            key = self._key(chat_id, message_id, "chunks")
            stop_id = await self._stop_script(keys=[active, key], args=[message_id])
        if stop_id is None:
            return False  # it ended by itself in between
        # Its follower, in the process that generates it, cancels it; wait for its end here.
        reading = self._read(chat_id, message_id, stop_id)
        try:
            async with asyncio.timeout(self.stop_timeout), contextlib.aclosing(reading):
                async for _ in reading:
                    pass
        except TimeoutError:
            logger.warning("answer %s of chat %s did not stop in time", message_id, chat_id)
        return True

    async def delivered(self, chat_id: str, message_id: str) -> None:
        """A client received this answer's end: no new reader gets it.

        Readers already reading it (in this process or another) have ``grace`` seconds to
        read the rest from Redis; most read it from their follower, which needs nothing more.
        """
        keys = [
            self._key(chat_id, "active"),
            self._key(chat_id, "latest"),
            self._key(chat_id, message_id, "chunks"),
        ]
        grace = round(self.grace * 1000) or 1
        try:
            async with _reachable():
                done = self._delivered(keys=keys, args=[message_id, grace])
                await self._shared(("delivered", chat_id, message_id), done)
        except StoreUnavailable as exc:  # linger forgets it anyway; the reader is served
            logger.warning(
                "could not mark answer %s of chat %s delivered: %s", message_id, chat_id, exc
            )

    async def aclose(self) -> None:
        """At shutdown: end this process's answers (readers get an error part), close Redis."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        following = [f.task for f in self._followers.values() if f.task is not None]
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        for client in (self._writes, self._reads, self._follow):
            await client.aclose()


# -- one reader's connection: an SSE response with one task instead of four ----------------------


class LeanEventSourceResponse(EventSourceResponse):
    """sse-starlette's ``EventSourceResponse`` at a quarter of the tasks: for 1,000 readers.

    sse-starlette runs every response as a task group of four tasks: the stream, the ping,
    a shutdown listener and a disconnect listener (with their cancel scopes and events, about
    23 of the 47 KB a capstone reader costs, measured with ``tracemalloc``). This response
    does the same four jobs with the request's own task and one more:

    - the stream runs in the request's task, in a cancel scope;
    - one listener task waits for the client to leave (``receive()``) and, with a timeout
      around that wait, writes the ping every ``ping`` seconds while it waits: a cancelled
      ``receive()`` loses nothing (the message stays for the next call);
    - at shutdown, one watcher per event loop (not a task per response) cancels every open
      stream, where sse-starlette's watcher would have: the same flags
      (:func:`course_app.streams.shutdown.shutdown_requested`), the same cut.

    Unchanged from sse-starlette: the encoding, ``send_timeout`` on every send (a frozen
    client's data or ping send ends the response), the generator closed at once when the
    client leaves, HEAD answered without a stream. Not supported: ``data_sender_callable``,
    ``shutdown_event`` and ``shutdown_grace_period`` (this response cuts at once, as
    sse-starlette does by default).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() == "HEAD":
            await super().__call__(scope, receive, send)  # no stream runs: nothing to save
            return
        failure: list[BaseException] = []
        open_streams = _open_streams()
        with anyio.CancelScope() as streaming:
            open_streams.add(streaming)
            listener = asyncio.create_task(self._listen(receive, send, streaming, failure))
            try:
                await self._stream_response(send)
            finally:
                open_streams.scopes.discard(streaming)
                listener.cancel()  # it records its own failures: nothing to retrieve
        if failure:  # a ping to a frozen client timed out: end as a data send would
            raise failure[0]
        if self.background is not None:
            await self.background()

    async def _listen(
        self,
        receive: Receive,
        send: Send,
        streaming: anyio.CancelScope,
        failure: list[BaseException],
    ) -> None:
        """Wait for the client to leave, pinging every ``ping_interval`` s; then end the stream."""
        try:
            while self.active:
                with anyio.move_on_after(self.ping_interval or None):
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self.active = False
                        if self.client_close_handler_callable:
                            await self.client_close_handler_callable(message)
                        break
                    continue
                await self._send_ping(send)
        except Exception as exc:  # SendTimeoutError from a frozen client, or receive() failed
            failure.append(exc)
        streaming.cancel()

    async def _send_ping(self, send: Send) -> None:
        """One ping, as sse-starlette writes it (its ``_ping`` loop, one turn)."""
        ping = (
            self.ping_message_factory()
            if self.ping_message_factory
            else ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=self.sep)
        )
        message = {"type": "http.response.body", "body": ensure_bytes(ping, self.sep)}
        async with self._send_lock:
            if self.active:
                await self._send_with_timeout(send, {**message, "more_body": True})


class _OpenStreams:
    """One event loop's open lean streams, and the one task that ends them at shutdown.

    The task runs only while streams are open, polling the shutdown flags as often as
    uvicorn's own main loop checks its own (``course_app.streams.shutdown``).
    """

    def __init__(self) -> None:
        self.scopes: set[anyio.CancelScope] = set()
        self.watcher: asyncio.Task[None] | None = None

    def add(self, streaming: anyio.CancelScope) -> None:
        if shutdown_requested():  # as in sse-starlette: a stream that starts now ends at once
            streaming.cancel()
            return
        self.scopes.add(streaming)
        if self.watcher is None:
            self.watcher = asyncio.create_task(self._watch(), name="lean-sse-shutdown")

    async def _watch(self) -> None:
        try:
            # Polled: the flags are set in a signal handler, which wakes no event loop.
            while self.scopes and not shutdown_requested():  # noqa: ASYNC110
                await asyncio.sleep(SHUTDOWN_POLL)
            for streaming in list(self.scopes):
                streaming.cancel()
        finally:
            self.watcher = None  # and the loop can be collected: nothing else refers to it


_OPEN: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _OpenStreams] = (
    weakref.WeakKeyDictionary()
)


def _open_streams() -> _OpenStreams:
    loop = asyncio.get_running_loop()
    found = _OPEN.get(loop)
    if found is None:
        found = _OPEN[loop] = _OpenStreams()
    return found
