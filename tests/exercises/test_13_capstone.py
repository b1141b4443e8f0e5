"""Lesson 13: the answer store (start, run, replay, stop), the POST route of the chat service,
and the follower (one read of a source for any number of readers).

The store is tested on chunk sources the test drives chunk by chunk, so no verdict depends on
the machine's speed; the routes against the course's fake LLM server, with "count forever"
where an answer must still be running when the test acts: the relay cuts it at MAX_DELTAS
pieces, which take 20 s at the checks' pace, more than a check may last. The follower runs
on a feed the test writes entry by entry (every step happens on one event loop, in the same
order at any speed), and once on a real Redis stream, where `CLIENT LIST` counts its
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any, TypeVar

import httpx
import httpx_sse
import pytest
import redis
from fastapi.testclient import TestClient

from course_app.checking import live_server  # noqa: F401 (a fixture)
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import StreamStats
from course_app.runtime import LessonServer
from course_app.services import RedisServer, redis_client
from course_app.streams import INTERNAL, SHUT_DOWN, STOPPED, AnswerInProgress
from course_app.streams import ui_message_stream as ui

from task_helpers import server_said

# verify=False on loopback clients: plain HTTP, and no CA bundle to load (0.05-0.2 s of CPU each).
T = TypeVar("T")
BOUND = 5.0  # seconds: how long a test waits for something that must happen (a bound)
SECRET = "connection to 10.0.0.7:5432 refused (password=hunter2)"
FILE_PART = {"type": "file", "mediaType": "text/plain", "url": "data:text/plain,hello"}
PROMPT_COUNT = [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "count to 5"}]}]


# -- the store, on sources the test drives ------------------------------------------------------


class Source:
    """A chunk source for one answer: it yields what the test puts, when the test puts it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    def put(self, *chunks: ui.Chunk | BaseException | None) -> None:
        for chunk in chunks:
            self.queue.put_nowait(chunk)

    async def chunks(self) -> AsyncIterator[ui.Chunk]:
        try:
            while (chunk := await self.queue.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk
                yield chunk
        finally:
            self.closed = True  # what closes the upstream request in the real relay


def opening(message_id: str) -> list[ui.Chunk]:
    return [ui.start(message_id), ui.text_start("t1"), ui.text_delta("t1", "Hel")]


def run(scenario: Any) -> Any:
    """Run one scenario on a fresh event loop, bounded."""

    async def bounded() -> Any:
        async with asyncio.timeout(BOUND * 2):
            return await scenario

    return asyncio.run(bounded())


async def read(answer: Any) -> list[tuple[str, ui.Chunk]]:
    """Every (id, chunk) of a replay, to its end (bounded)."""
    assert answer is not None, "replay() returned None for a chat that has an answer"
    got = []
    try:
        async with asyncio.timeout(BOUND):
            async for event_id, data in answer.chunks:
                got.append((event_id, json.loads(data)))
    except TimeoutError:
        raise AssertionError(f"the replay never ended; it gave {got}") from None
    return got


async def started(store: Any, chat_id: str, message_id: str, source: Source) -> None:
    try:
        async with asyncio.timeout(1):
            await store.start(chat_id, message_id, source.chunks())
    except TimeoutError:
        raise AssertionError("start() did not return at once: run the answer in a task") from None


def test_start_runs_the_answer_as_a_task_that_readers_follow(exercise: ModuleType) -> None:
    """start() returns at once; readers get every chunk from the start, live, until the end

    `start()` must not wait for the answer: which asyncio function runs `_run()` on its
    own? A reader who comes in the middle gets the answer from its first chunk: what does
    `replay()` follow, and from where?
    """

    async def scenario() -> tuple[list, list]:
        store, source = exercise.AnswerStore(), Source()
        await started(store, "c1", "m1", source)
        early = await store.replay("c1")
        source.put(*opening("m1"))
        await asyncio.sleep(0.05)
        late = await store.replay("c1")  # joins in the middle
        source.put(ui.text_delta("t1", "lo"), ui.text_end("t1"), ui.finish("stop"), None)
        return await read(early), await read(late)

    early, late = run(scenario())
    expected = [*opening("m1"), ui.text_delta("t1", "lo"), ui.text_end("t1"), ui.finish("stop")]
    assert early == [(f"m1:{n}", chunk) for n, chunk in enumerate(expected, start=1)]
    assert late == early


def test_one_running_answer_per_chat(exercise: ModuleType) -> None:
    """a second answer for a chat whose answer runs raises AnswerInProgress; later, it replaces it

    When is a chat's answer still running (what does `_run()` set when it ends)? Other
    chats are not affected. Once the answer has ended, the new one takes its place: what
    does `replay()` give then?
    """

    async def scenario() -> tuple[bool, list]:
        store, first, second, other = exercise.AnswerStore(), Source(), Source(), Source()
        await started(store, "c1", "m1", first)
        refused = False
        try:
            await store.start("c1", "m2", second.chunks())
        except AnswerInProgress:
            refused = True
        await started(store, "c2", "m3", other)  # another chat: no problem
        first.put(ui.start("m1"), ui.finish("stop"), None)
        await read(await store.replay("c1"))
        await started(store, "c1", "m4", second)  # the first answer has ended
        second.put(ui.start("m4"), ui.finish("stop"), None)
        other.put(None)
        return refused, await read(await store.replay("c1"))

    refused, replaced = run(scenario())
    assert refused, "start() accepted a second answer while the chat's answer was running"
    assert replaced == [("m4:1", ui.start("m4")), ("m4:2", ui.finish("stop"))]


def test_replay_resumes_after_an_id_of_this_answer_only(exercise: ModuleType) -> None:
    """replay() resumes after "<message>:<n>" of this answer; any other id starts over; None when unknown

    Split the id at its last ":": which answer does it name, and which position? When is
    the position one you may resume after (digits only, not beyond the newest chunk), and
    what do you do with every other id?
    """
    chunks = [ui.start("m1"), ui.text_start("t1"), ui.text_delta("t1", "Hi"), ui.text_end("t1")]

    async def scenario() -> dict[str | None, Any]:
        store, source = exercise.AnswerStore(), Source()
        await started(store, "c1", "m1", source)
        source.put(*chunks, ui.finish("stop"), None)
        await read(await store.replay("c1"))  # to its end; not delivered, so it is kept
        ids = [None, "m1:2", "m1:5", "m0:2", "m1:", "m1:x", "m1:99", "m1:²", "2", ""]
        got: dict[str | None, Any] = {}
        for last_event_id in ids:
            got[last_event_id] = [i for i, _ in await read(await store.replay("c1", last_event_id))]
        got["unknown chat"] = await store.replay("nope")
        return got

    got = run(scenario())
    everything = ["m1:1", "m1:2", "m1:3", "m1:4", "m1:5"]
    assert got[None] == everything
    assert got["m1:2"] == ["m1:3", "m1:4", "m1:5"]
    assert got["m1:5"] == []
    for other in ["m0:2", "m1:", "m1:x", "m1:99", "m1:²", "2", ""]:
        assert got[other] == everything, f"Last-Event-ID {other!r}: {got[other]}"
    assert got["unknown chat"] is None


def test_stop_closes_the_source_and_ends_with_abort(exercise: ModuleType) -> None:
    """stop() cancels the answer, closes its source, ends it with text-end and abort; then False

    Which exception reaches `_run()` when its task is cancelled, and what must it log
    before re-raising? Which text part is still open, and who knows? Does `stop()` wait
    until the task has ended before it returns?
    """

    async def scenario() -> tuple[bool, bool, bool, list, bool, bool]:
        store, source = exercise.AnswerStore(), Source()
        await started(store, "c1", "m1", source)
        reader = await store.replay("c1")
        source.put(*opening("m1"))
        await asyncio.sleep(0.05)
        stopped = await store.stop("c1")
        closed_by_then = source.closed
        task = store.answers["c1"].task
        cancelled = task is not None and task.done() and task.cancelled()
        chunks = await read(reader)
        return (
            stopped,
            closed_by_then,
            cancelled,
            chunks,
            await store.stop("c1"),
            await store.stop("c9"),
        )

    stopped, closed, cancelled, chunks, again, unknown = run(scenario())
    assert stopped is True
    assert closed, "the source was not closed when stop() returned: the model would go on"
    assert cancelled, "the task did not end cancelled: re-raise the CancelledError"
    assert [chunk for _, chunk in chunks] == [*opening("m1"), ui.text_end("t1"), ui.abort(STOPPED)]
    assert (again, unknown) == (False, False), "stopping a finished or unknown answer is harmless"


def test_a_failing_source_ends_with_a_safe_error(
    exercise: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """a source that raises ends the answer with text-end and error(INTERNAL); the details are logged

    Which `except` catches a bug or a lost database without catching `CancelledError`?
    The client may only see INTERNAL: where does the exception's text go instead? Is the
    chat free for a new answer afterwards?
    """

    async def scenario() -> tuple[list, bool]:
        store, source, retry = exercise.AnswerStore(), Source(), Source()
        await started(store, "c1", "m1", source)
        source.put(*opening("m1"), RuntimeError(SECRET))
        chunks = await read(await store.replay("c1"))
        await started(store, "c1", "m2", retry)  # the failed answer has ended
        retry.put(None)
        return chunks, source.closed

    with caplog.at_level(logging.ERROR):
        chunks, closed = run(scenario())
    assert [chunk for _, chunk in chunks] == [*opening("m1"), ui.text_end("t1"), ui.error(INTERNAL)]
    assert SECRET in caplog.text, "log the exception (logger.exception): it is gone otherwise"
    assert closed


def test_shutdown_ends_running_answers_with_an_error(exercise: ModuleType) -> None:
    """at shutdown (aclose), a running answer ends with text-end and error(SHUT_DOWN), not abort

    `aclose()` cancels the task, as `stop()` does: how does `_run()` tell the two apart?
    """

    async def scenario() -> tuple[list, bool]:
        store, source = exercise.AnswerStore(), Source()
        await started(store, "c1", "m1", source)
        reader = await store.replay("c1")
        source.put(*opening("m1"))
        await asyncio.sleep(0.05)
        await store.aclose()
        return await read(reader), source.closed

    chunks, closed = run(scenario())
    assert [chunk for _, chunk in chunks] == [
        *opening("m1"),
        ui.text_end("t1"),
        ui.error(SHUT_DOWN),
    ]
    assert closed


def test_a_finished_answer_is_kept_until_delivered_or_linger(exercise: ModuleType) -> None:
    """a finished answer stays until delivered() or `linger` seconds on the store's clock

    `delivered()` and the eviction are given, and both read `finished_at`: which clock
    sets it (the store's own, or `time.monotonic()`)? Is it set however the answer ends?
    """
    now = [100.0]

    async def scenario() -> list[bool]:
        store = exercise.AnswerStore(linger=60, clock=lambda: now[0])
        kept = []
        for chat in ("c1", "c2"):
            source = Source()
            await started(store, chat, f"m-{chat}", source)
            source.put(ui.start(f"m-{chat}"), ui.finish("stop"), None)
            await read(await store.replay(chat))
        await store.delivered("c1", "m-c1")
        kept.append(await store.replay("c1") is not None)
        now[0] += 59
        kept.append(await store.replay("c2") is not None)
        now[0] += 1
        kept.append(await store.replay("c2") is not None)
        return kept

    assert run(scenario()) == [False, True, False]


# -- the routes, against the fake LLM server ----------------------------------------------------


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[LessonServer]:
    with LessonServer(create_fake_llm(), name="t13-llm") as server:
        yield server


@pytest.fixture(scope="module")
def client(exercise: ModuleType, fake_llm: LessonServer) -> Iterator[TestClient]:
    with TestClient(exercise.create_app(llm_settings(fake_llm.url))) as client:
        yield client


def request(chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    message = {"id": f"u-{chat_id}", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", **extra}


def chunks_of(events: list[httpx_sse.ServerSentEvent]) -> list[ui.Chunk]:
    assert events and events[-1].data == ui.DONE, "the stream must end with data: [DONE]"
    return [json.loads(event.data) for event in events[:-1]]


def post(client: TestClient, body: dict[str, Any]) -> list[httpx_sse.ServerSentEvent]:
    with httpx_sse.connect_sse(client, "POST", "/api/chat", json=body) as source:
        assert source.response.status_code == 200, source.response.read()
        return list(source.iter_sse())


def read_text_until(events: Iterator[httpx_sse.ServerSentEvent], deltas: int) -> list[Any]:
    got = []
    while sum(chunk["type"] == "text-delta" for chunk in got) < deltas:
        got.append(json.loads(next(events).data))
    return got


def wait_for(condition: Any) -> bool:
    deadline = time.monotonic() + BOUND
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_post_streams_the_ui_message_stream(client: TestClient) -> None:
    """POST /api/chat streams start, a text part, finish and [DONE], with the protocol's header

    Is the request the answer's owner, or its first reader? Start the answer in the store,
    then return the store's replay of it (`answer_response()` makes the stream).
    """
    with httpx_sse.connect_sse(
        client, "POST", "/api/chat", json=request("p1", "count to 3")
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = list(source.iter_sse())
    chunks = chunks_of(events)
    assert [c["type"] for c in chunks] == [
        "start",
        "text-start",
        *["text-delta"] * 3,
        "text-end",
        "finish",
    ]
    assert ui.assemble(chunks).text == "1, 2, 3."
    message_id = chunks[0]["messageId"]
    assert message_id.startswith("msg_")
    assert [e.id for e in events[:-1]] == [f"{message_id}:{n}" for n in range(1, 8)]


def test_bad_input_is_a_4xx_and_starts_no_answer(
    client: TestClient, fake_llm: LessonServer
) -> None:
    """a malformed, invalid or oversized body is a 4xx with JSON and starts nothing; the chat then works

    Which of these are refused before your route runs (`read_chat_request`)? A refused
    request must leave nothing behind: is the chat free for the next, valid message?
    """
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    before = stats.started
    last_is_assistant = request("b1", "hello")
    last_is_assistant["messages"][0]["role"] = "assistant"
    bad = {
        "not JSON": b"{'id': 1",
        "no messages": json.dumps({"id": "b1", "messages": []}).encode(),
        "a text part without text": json.dumps(
            {"id": "b1", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text"}]}]}
        ).encode(),
        "the last message is not the user's": json.dumps(last_is_assistant).encode(),
        "a message of a file only": json.dumps(
            {"id": "b1", "messages": [{"id": "u", "role": "user", "parts": [FILE_PART]}]}
        ).encode(),
        "a chat id with a slash": json.dumps(request("b/1", "hello")).encode(),
        "too big": json.dumps(request("b1", "x" * 300_000)).encode(),
    }
    for name, body in bad.items():
        response = client.post(
            "/api/chat", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert "detail" in response.json(), name
        if name == "a message of a file only":  # the model is sent text only: nothing to answer
            assert response.status_code == 422, (name, response.status_code)
            assert "no text" in str(response.json()["detail"]), (name, response.json())
    assert stats.started == before, "a refused request reached the model"
    assert ui.assemble(chunks_of(post(client, request("b1", "count to 2")))).text == "1, 2."


def test_a_dropped_connection_is_not_a_stop(client: TestClient) -> None:
    """a POST client that leaves does not stop the answer: GET .../stream replays it and goes on

    When the POST's connection closes, what happens to the task that generates the answer?
    What does the store give a reader that comes back: from which chunk does it start?
    """
    with httpx_sse.connect_sse(
        client, "POST", "/api/chat", json=request("d1", "count forever")
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        first = read_text_until(source.iter_sse(), 3)  # then the page is reloaded
    with httpx_sse.connect_sse(client, "GET", "/api/chat/d1/stream") as source:
        assert source.response.status_code == 200, "the answer was lost with its first reader"
        again = read_text_until(source.iter_sse(), 6)
    assert again[: len(first)] == first, "a resumed answer starts over from its first chunk"
    assert client.post("/api/chat/d1/stop").json() == {"stopped": True}


def test_a_second_answer_for_a_running_chat_is_a_409(client: TestClient) -> None:
    """while a chat's answer runs, another POST for the same chat is a 409 with a JSON detail

    Which exception does the store raise, and which HTTPException do you turn it into?
    Another chat is not affected; after Stop, the chat takes a new message.
    """
    with httpx_sse.connect_sse(
        client, "POST", "/api/chat", json=request("x1", "count forever")
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        events = source.iter_sse()
        read_text_until(events, 1)
        second = client.post("/api/chat", json=request("x1", "hello"))
        assert second.status_code == 409, second.text
        assert second.json()["detail"]
        assert ui.assemble(chunks_of(post(client, request("x2", "count to 2")))).text == "1, 2."
        assert client.post("/api/chat/x1/stop").json() == {"stopped": True}
        assert chunks_of(list(events))[-1] == ui.abort(STOPPED)
    assert ui.assemble(chunks_of(post(client, request("x1", "count to 1")))).text == "1."


def test_stop_stops_the_model_and_the_stream_ends_cleanly(
    client: TestClient, fake_llm: LessonServer
) -> None:
    """POST .../stop closes the upstream request; the stream ends with abort and [DONE]; then 204

    Stop cancels the task; what closes the upstream request then (the fake LLM counts it
    as cancelled)? After the stream's reader got [DONE], what does a resume get?
    """
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    assert wait_for(lambda: stats.open == 0), "an upstream stream of an earlier check is still open"
    before = stats.cancelled  # every earlier upstream stream has ended: only ours can move it
    with httpx_sse.connect_sse(
        client, "POST", "/api/chat", json=request("s1", "count forever")
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        events = source.iter_sse()
        got = read_text_until(events, 2)
        assert client.post("/api/chat/s1/stop").json() == {"stopped": True}
        rest = list(events)
    assert wait_for(lambda: stats.cancelled == before + 1), "the model was never stopped"
    chunks = got + chunks_of(rest)
    assert chunks[-2:] == [ui.text_end("text-1"), ui.abort(STOPPED)]
    assert ui.assemble(chunks).text.startswith("1, 2,")
    assert client.post("/api/chat/s1/stop").json() == {"stopped": False}
    assert client.get("/api/chat/s1/stream").status_code == 204
    assert client.get("/api/chat/never-seen/stream").status_code == 204


# A chunk the store cannot log: JSON has no bytes. It stands for any failure in the store's
# own loop body (a bug, a full log, a lost database), as opposed to a failure in the relay.
UNLOGGABLE: ui.Chunk = {"type": "text-delta", "id": "text-1", "delta": b"\xff"}


def test_a_failure_in_the_store_closes_the_upstream_request(
    exercise: ModuleType,
    fake_llm: LessonServer,
    live_server: Callable[..., LessonServer],  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """an answer that fails in the store (a chunk it cannot log) ends with error and closes the model's stream

    This time the exception is raised in your `async for` body, not inside the relay: where
    is the relay at that moment (its `async with stream:` still open)? What closes it
    however `_run()` ends, at once, instead of the garbage collector, some time later or
    never?
    """
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    assert wait_for(lambda: stats.open == 0), "an upstream stream of an earlier check is still open"
    before = stats.cancelled  # every earlier upstream stream has ended: only ours can move it
    # Held here as a traceback or a reference cycle may hold them in a real service: then
    # only an explicit close ends the upstream request, not the garbage collector.
    relays: list[AsyncIterator[ui.Chunk]] = []
    given_relay = exercise.answer_chunks

    async def fails_after_three_pieces(*args: Any, **kwargs: Any) -> AsyncIterator[ui.Chunk]:
        async with contextlib.aclosing(given_relay(*args, **kwargs)) as relay:
            pieces = 0
            async for chunk in relay:
                yield chunk
                pieces += chunk["type"] == "text-delta"
                if pieces == 3:
                    yield UNLOGGABLE

    def relay_that_fails(*args: Any, **kwargs: Any) -> AsyncIterator[ui.Chunk]:
        relays.append(fails_after_three_pieces(*args, **kwargs))
        return relays[-1]

    monkeypatch.setattr(exercise, "answer_chunks", relay_that_fails)
    server = live_server(exercise.create_app(llm_settings(fake_llm.url)))
    body = request("e1", "count forever")
    with (
        httpx.Client(base_url=server.url, timeout=BOUND, verify=False) as http,
        httpx_sse.connect_sse(http, "POST", "/api/chat", json=body) as source,
    ):
        status = source.response.status_code
        assert status == 200, f"POST /api/chat answered {status}{server_said(server, wait=BOUND)}"
        chunks = chunks_of(list(source.iter_sse()))
    assert chunks[-2:] == [ui.text_end("text-1"), ui.error(INTERNAL)]
    closed = wait_for(lambda: stats.cancelled == before + 1)
    assert closed, (
        "the answer ended with its error, but the model's stream is still open: the relay "
        "was left suspended at its `yield` (close `chunks` however _run() ends)"
    )


def test_resume_after_last_event_id(client: TestClient) -> None:
    """GET .../stream with Last-Event-ID sends only the chunks after it, then [DONE]

    The POST's events carry ids "<message id>:<n>": does your `replay()` resume after one
    of this answer?
    """
    with httpx_sse.connect_sse(
        client, "POST", "/api/chat", json=request("r1", "count to 5")
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        events = source.iter_sse()
        seen = [next(events) for _ in range(3)]  # start, text-start, "1,": then the tab closes
    headers = {"Last-Event-ID": seen[-1].id}
    with httpx_sse.connect_sse(client, "GET", "/api/chat/r1/stream", headers=headers) as source:
        rest = chunks_of(list(source.iter_sse()))
    chunks = [json.loads(event.data) for event in seen] + rest
    assert ui.assemble(chunks).text == "1, 2, 3, 4, 5."
    assert rest[0] == ui.text_delta("text-1", " 2,")


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param("rate-limit", "The model is busy. Try again in a moment.", id="429"),
        pytest.param(
            "drop", "Lost the connection to the model. Send your message again.", id="drop"
        ),
    ],
)
def test_upstream_failures_become_a_safe_error_part(
    client: TestClient, fault: str, message: str
) -> None:
    """an upstream 429 or dropped connection ends the stream with one error part, safe to show

    The relay (`answer_chunks`) is given: does your route pass `simulate` on as the
    `x-fake-fault` header (for the fake server only)?
    """
    chunks = chunks_of(post(client, request(f"f-{fault}", "hello", simulate=fault)))
    assert chunks[-1] == ui.error(message)
    assert sum(chunk["type"] == "error" for chunk in chunks) == 1


# -- the follower: one read of the feed, any number of readers ----------------------------------


class Piece(str):
    """An entry's data, counted while it is alive: what a follower keeps in memory shows."""

    alive = 0

    def __new__(cls, text: str) -> Piece:
        Piece.alive += 1
        return super().__new__(cls, text)

    def __del__(self) -> None:
        Piece.alive -= 1


class FakeFeed:
    """Entries 1, 2, ... that the test publishes. Each read makes fresh data and the feed keeps
    none, so the entries alive are the ones the follower and its readers hold. It counts the
    `wait_after()` calls waiting at once: on Redis, a connection each."""

    def __init__(self) -> None:
        self.newest = 0
        self.waiting = 0
        self.most_waiting = 0
        self._grew = asyncio.Event()

    def publish(self, count: int = 1) -> None:
        self.newest += count
        grew, self._grew = self._grew, asyncio.Event()
        grew.set()

    def _after(self, after: int) -> list[tuple[int, str]]:
        return [(n, Piece(f"entry {n}")) for n in range(after + 1, self.newest + 1)]

    async def wait_after(self, after: int) -> list[tuple[int, str]]:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            while self.newest <= after:
                await self._grew.wait()
            return self._after(after)
        finally:
            self.waiting -= 1

    async def history(self, after: int) -> list[tuple[int, str]]:
        await asyncio.sleep(0)  # a round trip
        return self._after(after)


def entries(first: int, last: int) -> list[tuple[int, str]]:
    return [(n, f"entry {n}") for n in range(first, last + 1)]


async def take(
    reader: AsyncIterator[Any],
    after: int,
    last: int,
    *,
    slow: int = 0,
    started: list[int] | None = None,
    who: str = "a reader",
) -> list[tuple[int, str]]:
    """The reader's entries after `after` up to `last` (data as plain text), checked one by
    one: a gap or a duplicate fails at once, named. `slow`: loop turns between two entries;
    `started`: a list to which this reader adds a slot that counts its entries."""
    got: list[tuple[int, str]] = []
    slot = len(started) if started is not None else 0
    if started is not None:
        started.append(0)

    def failure(problem: str) -> AssertionError:
        recent = [i for i, _ in got][-6:]
        return AssertionError(f"{who}, from entry {after + 1}, got ids ...{recent}: {problem}")

    try:
        async with asyncio.timeout(BOUND):
            async for entry_id, data in reader:
                got.append((entry_id, str(data)))
                due = after + len(got)
                if entry_id < due:
                    raise failure(f"entry {entry_id} came again (a duplicate)")
                if entry_id > due:
                    missing = (
                        f"entries {due} to {entry_id - 1}" if entry_id - 1 > due else f"entry {due}"
                    )
                    raise failure(f"{missing} never came (a gap)")
                if started is not None:
                    started[slot] += 1
                if entry_id == last:
                    break
                for _ in range(slow):
                    await asyncio.sleep(0)
    except TimeoutError:
        raise failure(
            f"then it waited for ever for entry {after + len(got) + 1}: nobody woke it,"
            " or nothing read the feed"
        ) from None
    finally:
        await reader.aclose()  # type: ignore[attr-defined]
    return got


@contextlib.asynccontextmanager
async def following(exercise: ModuleType, feed: Any, **options: int) -> AsyncIterator[Any]:
    """The exercise's Follower of `feed`, started; closed at the end. If its task failed or
    ended, that is the verdict: it explains why the readers got nothing."""
    follower = exercise.Follower(feed, **options).start()
    try:
        yield follower
    finally:
        task = follower.task
        ended = task is not None and task.done() and not task.cancelled()
        failure = task.exception() if ended else None  # type: ignore[union-attr]
        await follower.aclose()
        if failure is not None:
            raise failure
        if ended:
            raise AssertionError("the follower's _run() returned: it must read the feed for ever")


async def gathered(tasks: list[asyncio.Task[T]]) -> list[T]:
    """Every task's result; the first failure raised once all have ended (none left unread)."""
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


async def turns(count: int = 5) -> None:
    """Let every other task run a few steps (no time passes: a verdict never depends on speed)."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_follower_readers_join_at_any_point_without_gap_or_duplicate(
    exercise: ModuleType,
) -> None:
    """Follower: readers joining at every point, from the start or after an id, get each entry once, in order

    A reader that joins late needs entries the window has already dropped: where are they
    still kept? Then it reads the window: which of its entries does it already have? And
    if the window moves on while the reader is suspended at a `yield`, does your reader
    still find its next entry?
    """
    total = 30

    async def scenario() -> dict[tuple[int, int, int], list[tuple[int, str]]]:
        feed = FakeFeed()
        readers = {}
        async with following(exercise, feed, window=4) as follower:
            for step in range(total):
                joined = feed.newest  # readers join now: from the start, the middle, the end
                for after in sorted({0, joined // 2, max(joined - 1, 0), joined} - {total}):
                    for slow in (0, 3):  # one keeps up, one falls behind the window
                        who = f"a {'slow ' if slow else ''}reader that joined at entry {joined}"
                        reader = take(follower.read(after), after, total, slow=slow, who=who)
                        readers[(joined, after, slow)] = asyncio.create_task(reader)
                await turns()
                if feed.newest == total:
                    break
                feed.publish(min(1 + step % 3, total - feed.newest))  # 1, 2 or 3 at a time
            return dict(zip(readers, await gathered(list(readers.values())), strict=True))

    got = run(scenario())
    for (joined, after, slow), seen in got.items():
        expected = entries(after + 1, total)
        who = f"a {'slow ' if slow else ''}reader that joined after entry {joined}, from {after}"
        seen_ids, expected_ids = [i for i, _ in seen], [i for i, _ in expected]
        assert seen_ids == expected_ids, f"{who}: got ids {seen_ids}, expected {expected_ids}"
        assert seen == expected, who


def test_follower_200_readers_share_one_read_of_the_feed(exercise: ModuleType) -> None:
    """Follower: 200 readers of one feed wait on one wait_after() at a time, not one each

    Who calls `wait_after()`: the follower's task, or every reader? On Redis, a waiting
    `XREAD BLOCK` holds a connection for its whole wait: how many would 1,000 tabs need
    (lesson 09, "Why not one Redis connection per client?")? What do readers wait on instead?
    """

    async def scenario() -> tuple[int, list[list[tuple[int, str]]]]:
        feed = FakeFeed()
        feed.publish(2)
        async with following(exercise, feed) as follower:
            readers = [asyncio.create_task(take(follower.read(0), 0, 10)) for _ in range(200)]
            for _ in range(8):
                await turns()
                feed.publish()
            return feed.most_waiting, await gathered(readers)

    most, got = run(scenario())
    assert most == 1, (
        f"{most} wait_after() calls waited at once for 200 readers: only the follower may"
        " call it (on Redis, each waiting call holds a connection)"
        if most
        else "nothing called wait_after(): the follower's _run() reads the feed"
    )
    complete = sum(seen == entries(1, 10) for seen in got)
    assert complete == 200, f"{complete}/200 readers got entries 1 to 10 in order"


def test_follower_a_reader_that_stops_reading_holds_nobody_back(exercise: ModuleType) -> None:
    """Follower: a reader that stops reading neither holds the others back nor grows memory; later it gets every entry

    Does the follower ever wait for a reader (a full queue's `put()`)? While entries flow
    past a reader that does not read, what does it cost: a queue that grows, or nothing?
    When it reads again, where does it find what the window has dropped?
    """
    window, total = 8, 160

    async def scenario() -> tuple[list[tuple[int, str]], int, list[tuple[int, str]]]:
        feed = FakeFeed()
        async with following(exercise, feed, window=window) as follower:
            stalled = follower.read(0)
            first = []  # two entries, then this reader stops reading for a while
            feed.publish(2)
            async with asyncio.timeout(BOUND):
                for _ in range(2):
                    entry_id, data = await anext(stalled)
                    first.append((entry_id, str(data)))
            active = asyncio.create_task(take(follower.read(0), 0, total, who="another reader"))
            for _ in range(total - 2):
                feed.publish()
                await turns(2)
            try:
                active_got = await active
            except AssertionError as failure:
                await stalled.aclose()
                if "waited for ever" not in str(failure):
                    raise
                raise AssertionError(
                    f"while one reader stopped reading, {failure}. Does the follower wait for"
                    " the reader that stopped (a full queue)? It must never wait"
                ) from None
            await turns()
            gc.collect()
            kept = Piece.alive
            who = "the reader that stopped reading, once it read again"
            try:
                rest = await take(stalled, 2, total, who=who)
            except AssertionError as failure:
                raise AssertionError(
                    f"{failure}. What the window dropped meanwhile is in the feed's history"
                ) from None
            return active_got, kept, first + rest

    gc.collect()
    Piece.alive = 0  # what earlier checks left is gone; count from here
    active_got, kept, stalled_got = run(scenario())
    assert active_got == entries(1, total)
    assert kept <= 2 * window, (
        f"while one reader stopped reading, {kept} of {total} entries stayed in memory"
        f" (window={window}): keep at most the window's newest entries, shared by every"
        " reader, not a queue per reader, and never more than `window` in the window"
    )
    ids = [i for i, _ in stalled_got]
    assert stalled_got == entries(1, total), (
        f"the reader that stopped reading and read again got ids {ids}: what the window"
        " dropped meanwhile is still in the feed's history"
    )


# -- the follower on a real Redis ---------------------------------------------------------------


class RedisFeed:
    """A Redis stream as a feed: entry ids "0-<n>", `wait_after` is XREAD BLOCK on a pool of up
    to 250 connections (so a design with one per reader runs, and shows its count), `history`
    is XRANGE on a pool of 2."""

    def __init__(self, url: str, key: str) -> None:
        self.key = key
        self.blocking = redis_client(url, max_connections=250, name="t13-xread")
        self.short = redis_client(url, max_connections=2, wait=BOUND, name="t13-xrange")
        self.waiting = 0  # wait_after() calls under way

    @staticmethod
    def _entries(items: list[tuple[str, dict[str, str]]]) -> list[tuple[int, str]]:
        return [(int(entry_id.split("-")[1]), fields["data"]) for entry_id, fields in items]

    async def wait_after(self, after: int) -> list[tuple[int, str]]:
        self.waiting += 1
        try:
            while True:
                found = await self.blocking.xread({self.key: f"0-{after}"}, block=1000, count=500)
                if found:
                    return self._entries(found[0][1])
        finally:
            self.waiting -= 1

    async def history(self, after: int) -> list[tuple[int, str]]:
        return self._entries(await self.short.xrange(self.key, f"(0-{after}", "+"))

    async def aclose(self) -> None:
        await self.blocking.aclose()
        await self.short.aclose()


def test_follower_on_redis_reads_for_200_readers_on_one_connection(
    exercise: ModuleType, redis_server: RedisServer
) -> None:
    """Follower on a real Redis stream: 200 readers, one XREAD BLOCK connection (CLIENT LIST)

    This is the Redis store's problem: a blocking `XREAD` holds its connection while it
    waits, and redis-py's pool refuses the 101st. How many of your `wait_after()` calls
    wait at once? Readers that catch up use `history()` (`XRANGE`), a short command.
    """
    key, readers, total = "t13:feed", 200, 8
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    admin.delete(key)
    for n in range(1, 4):
        admin.xadd(key, {"data": f"entry {n}"}, id=f"0-{n}")

    def xread_connections() -> list[dict[str, Any]]:
        return [client for client in admin.client_list() if client["name"] == "t13-xread"]

    async def scenario() -> tuple[list[list[tuple[int, str]]], int]:
        feed = RedisFeed(redis_server.url, key)
        try:
            async with following(exercise, feed, window=4) as follower:
                started: list[int] = []
                tasks = [
                    asyncio.create_task(take(follower.read(0), 0, total, started=started))
                    for _ in range(readers)
                ]
                # Every reader has entries 1 to 3 and waits for more. Then, before anything new
                # is added, every wait_after() call of this moment holds its connection in a
                # blocked XREAD (a bounded wait: it never decides the verdict, only when to count).
                # A reader or the follower that has ended already (a TODO, an exception) will
                # not get there: stop waiting, and the verdict below names its failure.
                deadline = time.monotonic() + BOUND
                while (  # noqa: ASYNC110
                    sum(n >= 3 for n in started) < readers
                    and not any(task.done() for task in tasks)
                    and not (follower.task is not None and follower.task.done())
                    and time.monotonic() < deadline
                ):
                    await asyncio.sleep(0.01)
                waiting = feed.waiting
                while time.monotonic() < deadline:
                    blocked = [c for c in xread_connections() if "b" in c["flags"]]
                    if len(blocked) >= waiting:
                        break
                    await asyncio.sleep(0.01)
                for n in range(4, total + 1):
                    admin.xadd(key, {"data": f"entry {n}"}, id=f"0-{n}")
                    await turns()
                got = await gathered(tasks)
                return got, len(xread_connections())  # the pool keeps every one it opened
        finally:
            await feed.aclose()

    try:
        got, connections = run(scenario())
    finally:
        admin.delete(key)
        admin.close()
    assert connections <= 1, (
        f"{connections} Redis connections waited in XREAD BLOCK for {readers} readers of one"
        " stream: only the follower may wait for new entries; readers wait on the follower"
    )
    complete = sum(seen == entries(1, total) for seen in got)
    assert complete == readers, f"{complete}/{readers} readers got entries 1 to {total} in order"
