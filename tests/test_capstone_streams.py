"""Lesson 13's reader connection: one task per reader, and still every job sse-starlette did.

`answer_response()` streams an answer with `LeanEventSourceResponse`: the request's own task
plus one listener, instead of sse-starlette's four tasks (issue 20: memory per reader). These
tests prove the four jobs are still done, on the reference solution's own response and store:
the heartbeat while the answer is idle, the reader released when its client leaves, the
streams ended when the server begins to shut down, and a frozen client dropped after
`send_timeout`, for a data send and for a ping. Each waits for a condition with a bound, never
for a duration; the intervals are shortened through the solution's `PING` and `SEND_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import httpx
import pytest
from sse_starlette.sse import SendTimeoutError

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.runtime import LessonServer
from course_app.streams import AnswerStream, answer_streams
from course_app.streams import ui_message_stream as ui

BOUND = 5.0  # seconds any condition below may take on a loaded machine
SCOPE = {"type": "http", "method": "GET", "path": "/api/chat/c1/stream", "headers": []}


@pytest.fixture
def solution(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_exercise("13_capstone", "solutions")
    monkeypatch.setattr(module, "PING", 0.02)
    monkeypatch.setattr(module, "SEND_TIMEOUT", 0.2)
    return module


class Client:
    """The ASGI side of one connection: what the app sent, and a disconnect on demand."""

    def __init__(self, *, frozen_after: int | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.left = asyncio.Event()
        self.frozen_after = frozen_after  # body messages accepted before send() blocks for ever

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        bodies = sum(m["type"] == "http.response.body" for m in self.sent)
        if message["type"] == "http.response.body" and self.frozen_after is not None:
            if bodies >= self.frozen_after:
                await asyncio.Event().wait()  # a client that stopped reading: a full socket
        self.sent.append(message)

    @property
    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.sent).decode()

    @property
    def pings(self) -> int:
        return self.text.count(": ping")


async def until(condition: Callable[[], bool], why: str) -> None:
    """Poll `condition` for up to BOUND seconds (in this task: no task of its own to count)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(why)
        await asyncio.sleep(0.005)


class IdleAnswer:
    """An answer that sends `start` and then nothing until `more` is set (a stalled model)."""

    def __init__(self) -> None:
        self.more = asyncio.Event()

    async def chunks(self) -> AsyncIterator[ui.Chunk]:
        yield ui.start("m1")
        await self.more.wait()
        yield ui.text_start("t")
        yield ui.text_delta("t", "late")
        yield ui.text_end("t")
        yield ui.finish("stop")


async def open_reader(
    solution: ModuleType, client: Client
) -> tuple[Any, IdleAnswer, asyncio.Task[None], dict[str, bool]]:
    """The solution's store with an idle answer, and one reader of it streaming to `client`."""
    store = solution.AnswerStore()
    answer = IdleAnswer()
    await store.start("c1", "m1", answer.chunks())
    stream = await store.replay("c1")
    released = {"reader": False}

    async def tracked() -> AsyncIterator[tuple[str, str]]:
        try:
            async for item in stream.chunks:
                yield item
        finally:
            released["reader"] = True

    response = solution.answer_response(store, "c1", AnswerStream(stream.message_id, tracked()))
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await until(lambda: '"type":"start"' in client.text, "the reader never got the start chunk")
    return store, answer, task, released


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_the_heartbeat_reaches_the_client_while_the_answer_is_idle(solution: ModuleType) -> None:
    async def test() -> None:
        client = Client()
        store, answer, task, _ = await open_reader(solution, client)
        await until(
            lambda: client.pings >= 3,
            "no ': ping' comment reached the client while the answer was idle: who writes the"
            " heartbeat now that the response has no ping task (LeanEventSourceResponse._listen)?",
        )
        assert client.text.count("data: ") == 1, "only the start chunk, then heartbeats"
        answer.more.set()  # the answer goes on: its chunks and [DONE] still arrive after pings
        await asyncio.wait_for(task, BOUND)
        assert client.text.rstrip().endswith(f"data: {ui.DONE}")
        await store.aclose()

    run(test)


def test_a_reader_is_released_when_its_client_leaves(solution: ModuleType) -> None:
    async def test() -> None:
        client = Client()
        store, _, task, released = await open_reader(solution, client)
        await until(lambda: client.pings >= 1, "no heartbeat before the client left")
        client.left.set()
        await until(
            task.done,
            "the response went on after its client left: the disconnect listener must end the"
            " stream (cancel its scope) when receive() says http.disconnect",
        )
        assert released["reader"], "the reader's generator was not closed when its client left"
        assert not store.answers["c1"].task.done(), "a client leaving must not stop the answer"
        await store.aclose()

    run(test)


def test_streams_end_when_the_server_begins_to_shut_down(
    solution: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test() -> None:
        clients = [Client() for _ in range(3)]
        store = solution.AnswerStore()
        answer = IdleAnswer()
        await store.start("c1", "m1", answer.chunks())
        tasks = []
        for client in clients:
            stream = await store.replay("c1")
            response = solution.answer_response(store, "c1", stream)
            tasks.append(asyncio.create_task(response(SCOPE, client.receive, client.send)))
        await until(lambda: all(c.pings for c in clients), "the readers never started")
        # What uvicorn's signal handler (or sse-starlette's AppStatus) would make it say; not
        # the process-wide flags themselves, which other servers of this process also watch.
        monkeypatch.setattr(answer_streams, "shutdown_requested", lambda: True)
        await until(
            lambda: all(t.done() for t in tasks),
            "the streams went on after the server began to shut down: uvicorn would wait for"
            " them for ever (or until --timeout-graceful-shutdown); who ends them now that the"
            " response has no shutdown task (the per-loop watcher in answer_streams)?",
        )
        assert all(f"data: {ui.DONE}" not in c.text for c in clients), "cut, as sse-starlette does"
        await store.aclose()

    run(test)


def test_a_frozen_client_is_dropped_when_a_ping_times_out(solution: ModuleType) -> None:
    async def test() -> None:
        # The answer is idle, so the only sends are pings: the start chunk and one ping get
        # through, then the client stops reading and the next ping waits on a full socket.
        client = Client(frozen_after=2)
        store, _, task, released = await open_reader(solution, client)
        try:
            await asyncio.wait_for(task, BOUND)
        except SendTimeoutError:
            pass
        except TimeoutError:
            raise AssertionError(
                "a ping to a client that stopped reading waited for ever: the listener must"
                " end the response when its ping send times out (send_timeout)"
            ) from None
        else:
            raise AssertionError("the response ended quietly: a frozen client is an error")
        assert released["reader"], "the reader was not released after the ping timed out"
        await store.aclose()

    run(test)


def test_a_frozen_client_is_dropped_when_a_chunk_times_out(
    solution: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(solution, "PING", 0)  # no heartbeat: only the answer's chunks are sent

    async def test() -> None:
        client = Client(frozen_after=1)  # the start chunk, then a full socket
        store, answer, task, released = await open_reader(solution, client)
        answer.more.set()
        with pytest.raises(SendTimeoutError):
            await asyncio.wait_for(task, BOUND)
        assert released["reader"], "the reader was not released after the send timed out"
        assert client.pings == 0
        await store.aclose()

    run(test)


def test_a_reader_costs_two_tasks_not_five(solution: ModuleType) -> None:
    """The memory design itself: the request's task and one listener per reader.

    sse-starlette's EventSourceResponse runs four tasks besides the request's (stream, ping,
    shutdown listener, disconnect listener): 200 readers held 1,000 tasks, about half of
    their memory. One shutdown watcher serves every stream of the event loop.
    """

    async def test() -> None:
        store = solution.AnswerStore()
        answer = IdleAnswer()
        await store.start("c1", "m1", answer.chunks())
        before = len(asyncio.all_tasks())
        clients = [Client() for _ in range(200)]
        tasks = []
        for client in clients:
            stream = await store.replay("c1")
            response = solution.answer_response(store, "c1", stream)
            tasks.append(asyncio.create_task(response(SCOPE, client.receive, client.send)))
        await until(lambda: all('"type":"start"' in c.text for c in clients), "readers stuck")
        added = len(asyncio.all_tasks()) - before
        assert added == 2 * 200 + 1, f"{added} tasks for 200 readers (expected 200 x 2 + 1 watcher)"
        for client in clients:
            client.left.set()
        await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
        await until(lambda: len(asyncio.all_tasks()) == before, "tasks left after the readers")
        await store.aclose()

    run(test)


def test_over_the_wire_a_stalled_answer_gets_heartbeats_and_a_client_that_leaves_is_let_go(
    solution: ModuleType,
) -> None:
    """Real uvicorn: pings reach the client, and a timeout around receive() loses no disconnect."""

    def open_streams() -> int:  # the lean streams open in this process (the server's thread)
        for _ in range(100):
            try:
                return sum(len(o.scopes) for o in list(answer_streams._OPEN.values()))
            except RuntimeError:  # the server's thread changed the dict meanwhile: look again
                continue
        raise AssertionError("could not count the open streams")

    def wait_for(condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + BOUND
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        return condition()

    request = {
        "id": "s1",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "simulate": "stall",  # three tokens, then the model says nothing for minutes
    }
    with (
        LessonServer(create_fake_llm(), name="t13-lean-llm") as llm,
        LessonServer(solution.create_app(llm_settings(llm.url)), name="t13-lean") as server,
        httpx.Client(base_url=server.url, timeout=BOUND) as http,
    ):
        with http.stream("POST", "/api/chat", json=request) as response:
            lines = response.iter_lines()
            seen: list[str] = []
            while sum(line.startswith(": ping") for line in seen) < 3:
                seen.append(next(lines))
            assert sum(line.startswith('data: {"type":"text-delta"') for line in seen) == 3
            assert open_streams() == 1
        # The client left while the answer was stalled: only the disconnect can end its stream.
        assert wait_for(lambda: open_streams() == 0), (
            "the stream of a client that left is still open on the server: was its disconnect"
            " lost when a ping's timeout cancelled receive()?"
        )
        assert http.post("/api/chat/s1/stop").json() == {"stopped": True}, "the answer went on"
