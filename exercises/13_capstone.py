"""Lesson 13 (capstone): a chat service whose answers survive a reload and stop on request,
in the wire protocol of the Vercel AI SDK, so its frontends use it as they are.

    POST /api/chat                the AI SDK's chat request -> the answer, streamed (SSE)
    GET  /api/chat/{id}/stream    the chat's answer again, from its start (or after a
                                  Last-Event-ID): 204 when there is none
    POST /api/chat/{id}/stop      stop the chat's answer; a dropped connection does not
    GET  /                        a chat page that uses all three

Each answer runs as a task of its own, not inside the request that asked for it: the
model's tokens go into an `AnswerStore` as UI message chunks (`course_app.streams.ui_message_stream`),
and every connection only *reads* them. A reload closes a connection and opens another; the
answer does not notice. Stop is a request of its own, because the server cannot tell a
closed tab from a lost connection or a reload.

You write the in-process store (`AnswerStore`: start, run, replay, stop) and the POST
route. With `REDIS_URL` set, the app uses `course_app.streams.answer_streams.RedisAnswerStore`
instead (same methods), so that any worker process can resume or stop any answer. Last, you
write the idea that lets that store serve 1,000 readers of an answer on one Redis connection,
on a feed of your own: a `Follower` (one reader of the source, any number of local readers).

Check your work: `course check 13` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 13` (it starts the course's fake LLM server too), then open
http://127.0.0.1:8000/, or
`curl -N http://127.0.0.1:8000/api/chat -H 'content-type: application/json'
-d '{"id": "c1", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text",
"text": "count to 300"}]}]}'` and, in another terminal while it runs,
`curl -N http://127.0.0.1:8000/api/chat/c1/stream` (the same answer, from its start), then
`curl -X POST http://127.0.0.1:8000/api/chat/c1/stop` (both streams end with an abort).
"""

import asyncio
import bisect
import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

import openai
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError

from course_app.fake_openai import FAULTS, LLMSettings, open_llm
from course_app.runtime import html_page
from course_app.streams import (
    INTERNAL,
    SHUT_DOWN,
    STOPPED,
    AnswerInProgress,
    AnswerStream,
    EventLog,
    LeanEventSourceResponse,
    RedisAnswerStore,
    StoreBusy,
    StoreUnavailable,
    guard_requests,
)
from course_app.streams import ui_message_stream as ui

logger = logging.getLogger("lesson.chat")

MAX_BODY = 256 * 1024  # bytes: a bigger request is refused with 413 before it is parsed
MAX_DELTAS = 20_000  # pieces of text in one answer: longer ones end there, "length"
MAX_CHUNKS = MAX_DELTAS + 10  # room in an answer's log for every chunk it can have
CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
POSITION = re.compile(r"[0-9]{1,18}")  # not str.isdigit(): it accepts "²", which int() rejects
PING = 15.0  # seconds between heartbeats (an SSE comment), well under proxies' idle timeouts
SEND_TIMEOUT = 30.0  # seconds a send may wait for a client that stopped reading: then it is dropped

# What an error part may say: shown to the user, so never an exception's text.
SAFE_MESSAGES = {
    "rate_limited": "The model is busy. Try again in a moment.",
    "upstream_unavailable": "Lost the connection to the model. Send your message again.",
    "upstream_error": "The model failed to answer.",
}
FINISH_REASONS: dict[str, ui.FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}


class ChatRequest(ui.ChatRequest):
    # Only the course's fake server knows faults; ignored for a real provider.
    simulate: Literal[FAULTS] | None = None  # type: ignore[valid-type]


# -- the model's answer as UI message chunks (given: lesson 10's relay, in the AI SDK's terms) --


async def answer_chunks(
    llm: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, str]],
    message_id: str,
    *,
    extra_headers: dict[str, str] | None = None,
) -> AsyncIterator[ui.Chunk]:
    """start, a text part with the tokens, then finish; an upstream failure ends in an error part.

    Closing this generator (or cancelling the task that runs it) closes the upstream
    request: `async with stream:`, as in lesson 10. An answer is cut at MAX_DELTAS pieces,
    so that a store can always keep every chunk of it.
    """
    yield ui.start(message_id)
    part = "text-1"
    opened = False
    deltas = 0
    reason: str | None = None
    ending: ui.Chunk
    try:
        stream = await llm.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            extra_headers=extra_headers,
        )
        async with stream:
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        if not opened:
                            opened = True
                            yield ui.text_start(part)
                        yield ui.text_delta(part, choice.delta.content)
                        deltas += 1
                    reason = choice.finish_reason or reason
                if deltas >= MAX_DELTAS:  # leaving `async with` stops the model
                    reason = "length"
                    break
        if reason is None:  # the body ended before its last chunk
            logger.warning("the upstream stream ended without a finish_reason")
            ending = ui.error(SAFE_MESSAGES["upstream_unavailable"])
        else:
            ending = ui.finish(FINISH_REASONS.get(reason, "other"))
    except openai.RateLimitError as exc:
        logger.warning("upstream rate limit: %s", exc)
        ending = ui.error(SAFE_MESSAGES["rate_limited"])
    except openai.APIConnectionError as exc:
        logger.warning("upstream connection failed: %s", exc)
        ending = ui.error(SAFE_MESSAGES["upstream_unavailable"])
    except openai.APIError as exc:
        logger.warning("upstream error: %s", exc)
        ending = ui.error(SAFE_MESSAGES["upstream_error"])
    if opened:
        yield ui.text_end(part)
    yield ending


# -- the store: answers by chat id, each generated by a task, read by any number of clients -----


@dataclass
class Answer:
    """One answer: its chunks (logged as JSON, numbered 1, 2, ...) and the task that writes them."""

    chat_id: str
    message_id: str
    log: EventLog = field(default_factory=lambda: EventLog(maxlen=MAX_CHUNKS))
    task: "asyncio.Task[None] | None" = None
    finished_at: float | None = None  # the store's clock() when it ended
    stopped: bool = False  # True once stop() asked for its end


class AnswerStore:
    """The chats' latest answers, in this process: one running answer per chat at most.

    A finished answer is kept until its end has been sent to a client (`delivered()`), or for
    `linger` seconds, for a client that lost its connection and comes back for the end.
    """

    def __init__(self, *, linger: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.linger = linger
        self.clock = clock
        self.answers: dict[str, Answer] = {}

    def _evict(self) -> None:
        """Forget the answers that ended `linger` seconds ago or more."""
        now = self.clock()
        for chat_id, answer in list(self.answers.items()):
            if answer.finished_at is not None and now - answer.finished_at >= self.linger:
                del self.answers[chat_id]

    async def start(self, chat_id: str, message_id: str, chunks: AsyncIterator[ui.Chunk]) -> None:
        """Generate this answer in a task of its own; returns at once."""
        # TODO: evict the expired answers first. If the chat's answer is still running
        #       (no finished_at yet), raise AnswerInProgress(chat_id): one answer per chat.
        # TODO: otherwise the new Answer replaces the chat's old one. Run
        #       self._run(answer, chunks) as an asyncio task and keep it in answer.task
        #       (the event loop keeps only a weak reference to a task).
        raise NotImplementedError("TODO: write start()")

    async def _run(self, answer: Answer, chunks: AsyncIterator[ui.Chunk]) -> None:
        """Log every chunk; however the answer ends, its log ends with exactly one end chunk."""
        # TODO: log each chunk as JSON: answer.log.append("chunk", ui.encode(chunk)). Pass
        #       each one through a ui.OpenParts() first (parts.track(chunk)): it remembers
        #       which text part is open, so that an answer cut short can close it.
        # TODO: close `chunks` however this ends (contextlib.aclosing): closing it is what
        #       closes the upstream request. A cancellation lands inside `chunks`, which
        #       then closes itself; but an exception raised in your loop body (or a store
        #       that awaits between chunks, as the Redis one does) leaves it open at its
        #       `yield` without this.
        # TODO: cancelled (CancelledError): log the open parts' ends (parts.end_all()),
        #       then ui.abort(STOPPED) if stop() asked for it (answer.stopped), else
        #       ui.error(SHUT_DOWN) (the app is shutting down); and re-raise.
        # TODO: any other exception: logger.exception(...), then the parts' ends and
        #       ui.error(INTERNAL). Nothing of the exception goes to clients.
        # TODO: in every case: set answer.finished_at = self.clock(), close the log.
        raise NotImplementedError("TODO: write _run()")

    async def replay(self, chat_id: str, last_event_id: str | None = None) -> AnswerStream | None:
        """The chat's answer for one reader: from its start, or after `last_event_id`.

        None when the store keeps no answer for the chat (the route answers 204).
        """
        # TODO: evict first; no answer for the chat? return None.
        # TODO: the ids a reader sees are "<message_id>:<n>", n the log's id. Resume after
        #       n only when the id names THIS answer and n is a position it has reached
        #       (POSITION.fullmatch, and at most answer.log.last_id: a higher one would
        #       wait for ever). Any other id (another answer's, garbage): from the start.
        # TODO: return AnswerStream(answer.message_id, self._read(answer, after)).
        raise NotImplementedError("TODO: write replay()")

    async def _read(self, answer: Answer, after: int | None) -> AsyncIterator[tuple[str, str]]:
        """The logged chunks after `after` as (event id, JSON), then each new one, to the end."""
        async for item in answer.log.follow(after=after):
            yield f"{answer.message_id}:{item.id}", item.data

    async def stop(self, chat_id: str) -> bool:
        """Stop the chat's running answer and wait until it has ended; False if none runs."""
        # TODO: no answer, or one that has finished: return False (stopping is harmless).
        # TODO: otherwise mark it stopped, cancel its task, and wait until the task has
        #       ended (asyncio.wait does not raise the task's CancelledError); return True.
        raise NotImplementedError("TODO: write stop()")

    async def delivered(self, chat_id: str, message_id: str) -> None:
        """This answer's end was sent to a client: forget it (a later resume gets 204)."""
        answer = self.answers.get(chat_id)
        if (
            answer is not None
            and answer.message_id == message_id
            and answer.finished_at is not None
        ):
            del self.answers[chat_id]

    async def aclose(self) -> None:
        """At shutdown: end the running answers (their readers get an error part)."""
        running = [a.task for a in self.answers.values() if a.task and not a.task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


Store = AnswerStore | RedisAnswerStore


# -- many readers, one read of the source: a follower (what the Redis store does per answer) -----

Entry = tuple[int, str]  # (id, data); ids only grow, as a Redis stream's entry ids do


class Feed(Protocol):
    """A source of numbered entries with two ways in, as an answer's Redis stream has."""

    async def wait_after(self, after: int) -> list[Entry]:
        """The entries after `after`, waiting until there is one.

        Costly while it waits: on Redis it is `XREAD BLOCK`, which holds a connection.
        """
        ...

    async def history(self, after: int) -> list[Entry]:
        """Every entry after `after` that the feed keeps, at once (`XRANGE`: a short command)."""
        ...


class Follower:
    """Reads one feed for any number of readers in this process: one `wait_after()` at a time.

    It keeps the newest entries it has read (at most `window`) in one list that every reader
    shares: a reader costs a position in it, not a copy, a queue or a connection. It never
    waits for a reader: a reader left behind the window catches up from the feed's history.
    (RedisAnswerStore's follower does this per answer, plus what ends an answer.)
    """

    def __init__(self, feed: Feed, *, window: int = 256) -> None:
        self.feed = feed
        self.window = window
        self.entries: list[Entry] = []  # the newest entries read, oldest first
        self.floor = 0  # the id of the newest entry dropped from `entries` (0: none yet)
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> "Follower":
        """Start reading the feed from its first entry, in a task of its own."""
        self.task = asyncio.create_task(self._run(), name="follower")
        return self

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def _wake(self) -> None:
        """Wake every reader waiting in `_changes()`: call it after each change of the window."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _changes(self) -> None:
        """Wait until the window changes."""
        await self._changed.wait()

    async def _run(self) -> None:
        """The one reader of the feed: read, publish into the window, wake the readers."""
        # TODO: for ever: ask the feed for the entries after the newest one read so far
        #       (the last in the window, or `floor` while the window is empty), add them
        #       to `entries`, drop the oldest beyond `window` (`floor` becomes the id of
        #       the newest one dropped), then wake the readers. Never wait for a reader.
        raise NotImplementedError("TODO: write _run()")

    async def read(self, after: int = 0) -> AsyncIterator[Entry]:
        """One reader: every entry after `after`, in order, then each new one, for ever."""
        # TODO: keep the id of the last entry given to this reader (start at `after`).
        # TODO: behind the window (the id is older than `floor`)? The window no longer has
        #       what comes next: give what `feed.history()` keeps after the id, then look
        #       again (a slow reader may fall behind more than once).
        # TODO: otherwise the next entry is the window's first one with a greater id: give
        #       it. The window may change while you are suspended at a `yield`: look it up
        #       again each time (`bisect.bisect_right(..., key=...)` finds it). Nothing
        #       newer? Wait for `_changes()`. Never call `wait_after()` here.
        raise NotImplementedError("TODO: write read()")
        yield  # keeps this a generator; replace both lines


# -- the wire: checking a request, streaming an answer ------------------------------------------


async def read_chat_request(request: Request) -> ChatRequest:
    """The body as a ChatRequest, or 422 when it is not one.

    guard_requests (in create_app) has already refused a body over MAX_BODY bytes (413)
    and one that is not UTF-8 JSON (422).
    """
    try:
        return ChatRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def answer_response(store: Store, chat_id: str, answer: AnswerStream) -> LeanEventSourceResponse:
    """The answer as the UI message stream: one chunk per event, with ids, then [DONE]."""

    async def frames() -> AsyncIterator[dict[str, str]]:
        async for event_id, data in answer.chunks:
            yield {"id": event_id, "data": data}
        yield {"data": ui.DONE}
        # Reached once [DONE] has been sent (the response pulls the next frame only after the
        # last send() returned): the end is in this connection's socket buffer, on its way,
        # not proven to be at the client. That is all a server knows without an
        # acknowledgement: a connection lost at this very moment loses the end, and a
        # resume then gets 204.
        await store.delivered(chat_id, answer.message_id)

    # sse-starlette's EventSourceResponse with one task per reader instead of four (same
    # heartbeat, send timeout, disconnect and shutdown handling): 1,000 readers of an answer
    # cost 1,000 open responses, and their tasks were most of a reader's memory.
    return LeanEventSourceResponse(
        frames(), headers=ui.HEADERS, ping=PING, send_timeout=SEND_TIMEOUT, sep="\n"
    )


def create_app(
    settings: LLMSettings | None = None,
    *,
    redis_url: str | None = None,
    linger: float = 60.0,
) -> FastAPI:
    """The chat service; with no settings, it starts the course's fake LLM server itself.

    Answers live in this process, or in Redis when `redis_url` is given.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the app's life: these settings, else OPENAI_BASE_URL and friends,
        # else the course's fake server, started here and stopped when the app stops.
        async with open_llm(settings, name="13-llm") as llm:
            app.state.settings, app.state.llm = llm.settings, llm.client
            if redis_url:
                app.state.store = RedisAnswerStore(redis_url, linger=linger)
            else:
                app.state.store = AnswerStore(linger=linger)
            try:
                yield
            finally:
                await app.state.store.aclose()  # running answers end; their readers are told

    app = FastAPI(title="Lesson 13: a resumable, stoppable chat service", lifespan=lifespan)
    guard_requests(app, max_body=MAX_BODY)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        logger.warning("%s", exc)
        if isinstance(exc, StoreBusy):  # this process's own limit was reached, not Redis
            detail = "The chat service is busy. Try again in a moment."
        else:
            detail = "The chat service cannot reach its store. Try again in a moment."
        return JSONResponse({"detail": detail}, status_code=503, headers={"retry-after": "5"})

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return html_page("13_chat.html")

    @app.post("/api/chat", response_model=None)
    async def chat(body: Annotated[ChatRequest, Depends(read_chat_request)]) -> Response:
        """Start the answer to the chat's last message, and stream it."""
        # The request is valid here (read_chat_request: 413 or 422 otherwise).
        # TODO: make a fresh message id for the answer: f"msg_{secrets.token_hex(8)}".
        # TODO: the chunks: answer_chunks(app.state.llm, settings.model, the history as
        #       ui.model_messages(...), the message id, extra_headers=...), where
        #       settings = app.state.settings, and extra_headers is
        #       {"x-fake-fault": body.simulate} when the request simulates a fault and
        #       settings.is_fake, else None.
        # TODO: start it in app.state.store. AnswerInProgress -> HTTPException(409) whose
        #       detail says that the chat already has an answer running (stop it first).
        # TODO: then read it like any reader (the store's replay(), from the start) and
        #       return answer_response(...). This request is only its first reader: when it
        #       leaves, the answer goes on.
        raise NotImplementedError("TODO: write chat()")

    @app.get("/api/chat/{chat_id}/stream", response_model=None)
    async def resume(
        chat_id: str, last_event_id: Annotated[str | None, Header(max_length=300)] = None
    ) -> Response:
        """The chat's answer again (the AI SDK's reconnectToStream): 204 when there is none."""
        store: Store = app.state.store
        answer = await store.replay(chat_id, last_event_id) if CHAT_ID.fullmatch(chat_id) else None
        if answer is None:
            return Response(status_code=204)  # also what makes an EventSource stop retrying
        return answer_response(store, chat_id, answer)

    @app.post("/api/chat/{chat_id}/stop")
    async def stop(chat_id: str) -> dict[str, bool]:
        """Stop the chat's running answer; harmless when none runs."""
        store: Store = app.state.store
        return {"stopped": bool(CHAT_ID.fullmatch(chat_id)) and await store.stop(chat_id)}

    return app


app = create_app(redis_url=os.environ.get("REDIS_URL") or None)
