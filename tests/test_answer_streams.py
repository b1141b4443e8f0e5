"""course_app.answer_streams: lesson 13's answers in Redis, resumed and stopped from any process.

Two instances of the lesson's app (the reference solution's), each with its own memory, share
one Redis, as two worker processes would: whatever one starts, the other can replay, refuse
a second time, and stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx_sse
import pytest

from course_app import LessonServer
from course_app import ui_message_stream as ui
from course_app.answer_streams import INTERRUPTED, SHUT_DOWN, STOPPED, RedisAnswerStore
from course_app.exercise_loader import load_exercise
from course_app.fake_openai import StreamStats
from course_app.fake_openai import create_app as create_fake_llm
from course_app.llm_settings import llm_settings
from course_app.redis_server import INSTALL_HINT, RedisServer, redis_binary

BOUND = 5.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if redis_binary() is None:
        message = f"these tests need redis-server: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with RedisServer(name="t13-answers") as server:
        yield server


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[LessonServer]:
    # "count forever" is cut by the relay at 20,000 pieces: 20 s at the suite's pace.
    with LessonServer(create_fake_llm(), name="t13-answers-llm") as server:
        yield server


@pytest.fixture
def two_workers(
    redis_server: RedisServer, fake_llm: LessonServer
) -> Iterator[tuple[LessonServer, LessonServer]]:
    solution = load_exercise("13_capstone", "solutions")
    settings = llm_settings(fake_llm.url)
    with (
        LessonServer(solution.create_app(settings, redis_url=redis_server.url), name="t13-a") as a,
        LessonServer(solution.create_app(settings, redis_url=redis_server.url), name="t13-b") as b,
    ):
        yield a, b


def body(chat_id: str, text: str) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message"}


def until_deltas(events: Iterator[httpx_sse.ServerSentEvent], count: int) -> list[Any]:
    got: list[Any] = []
    while sum(event.data.startswith('{"type":"text-delta"') for event in got) < count:
        got.append(next(events))
    return got


def chunks(events: list[httpx_sse.ServerSentEvent]) -> list[ui.Chunk]:
    assert events[-1].data == ui.DONE
    return [json.loads(event.data) for event in events[:-1]]


def wait_for(condition: Any) -> bool:
    deadline = time.monotonic() + BOUND
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_resume_and_stop_on_another_worker(
    two_workers: tuple[LessonServer, LessonServer], fake_llm: LessonServer
) -> None:
    a, b = two_workers
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    assert wait_for(lambda: stats.open == 0)
    cancelled = stats.cancelled
    with httpx.Client(timeout=10) as http:
        with httpx_sse.connect_sse(
            http, "POST", f"{a.url}/api/chat", json=body("w1", "count forever")
        ) as source:
            first = until_deltas(source.iter_sse(), 3)  # then the connection drops
        # A second answer for the chat is refused on the other worker too.
        refused = http.post(f"{b.url}/api/chat", json=body("w1", "hello"))
        assert refused.status_code == 409, refused.text
        with httpx_sse.connect_sse(http, "GET", f"{b.url}/api/chat/w1/stream") as source:
            assert source.response.status_code == 200
            assert source.response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            events = source.iter_sse()
            again = until_deltas(events, 6)
            assert [e.data for e in again[: len(first)]] == [e.data for e in first]
            assert [e.id for e in again[: len(first)]] == [e.id for e in first]
            assert http.post(f"{b.url}/api/chat/w1/stop").json() == {"stopped": True}
            rest = list(events)
        answer = chunks(again + rest)
        assert answer[-2:] == [ui.text_end("text-1"), ui.abort(STOPPED)]
        assert ui.assemble(answer).text.startswith("1, 2, 3, 4, 5, 6,")
        assert wait_for(lambda: stats.cancelled == cancelled + 1), "worker A's upstream still runs"
        # B's reader got the end: the answer is forgotten everywhere.
        assert http.get(f"{a.url}/api/chat/w1/stream").status_code == 204
        assert http.post(f"{a.url}/api/chat/w1/stop").json() == {"stopped": False}
        # The chat takes a new message, on either worker.
        with httpx_sse.connect_sse(
            http, "POST", f"{b.url}/api/chat", json=body("w1", "count to 2")
        ) as source:
            assert ui.assemble(chunks(list(source.iter_sse()))).text == "1, 2."


def test_last_event_id_resumes_on_another_worker(
    two_workers: tuple[LessonServer, LessonServer],
) -> None:
    a, b = two_workers
    with httpx.Client(timeout=10) as http:
        with httpx_sse.connect_sse(
            http, "POST", f"{a.url}/api/chat", json=body("w2", "count to 5")
        ) as source:
            events = source.iter_sse()
            seen = [next(events) for _ in range(3)]
        headers = {"Last-Event-ID": seen[-1].id}
        with httpx_sse.connect_sse(
            http, "GET", f"{b.url}/api/chat/w2/stream", headers=headers
        ) as source:
            rest = chunks(list(source.iter_sse()))
        assert rest[0] == ui.text_delta("text-1", " 2,")
        assert ui.assemble([json.loads(e.data) for e in seen] + rest).text == "1, 2, 3, 4, 5."
        assert http.get(f"{b.url}/api/chat/w2/stream").status_code == 204


def test_a_worker_shutting_down_tells_the_readers_elsewhere(
    two_workers: tuple[LessonServer, LessonServer],
) -> None:
    a, b = two_workers
    with httpx.Client(timeout=10) as http:
        with httpx_sse.connect_sse(
            http, "POST", f"{a.url}/api/chat", json=body("w3", "count forever")
        ) as source:
            until_deltas(source.iter_sse(), 1)
        with httpx_sse.connect_sse(http, "GET", f"{b.url}/api/chat/w3/stream") as source:
            events = source.iter_sse()
            until_deltas(events, 2)
            a.stop()  # its lifespan ends the answers it generates
            rest = list(events)
    assert chunks(rest)[-2:] == [ui.text_end("text-1"), ui.error(SHUT_DOWN)]


def test_redis_down_is_a_503(redis_server: RedisServer, fake_llm: LessonServer) -> None:
    solution = load_exercise("13_capstone", "solutions")
    app = solution.create_app(llm_settings(fake_llm.url), redis_url=redis_server.url)
    with LessonServer(app, name="t13-down") as server, httpx.Client(timeout=10) as http:
        redis_server.stop(keep_data=True)
        try:
            response = http.post(f"{server.url}/api/chat", json=body("w4", "hello"))
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert "Try again" in response.json()["detail"]
            assert http.get(f"{server.url}/api/chat/w4/stream").status_code == 503
        finally:
            redis_server.start()


async def _scenario(url: str) -> dict[str, Any]:
    store = RedisAnswerStore(url, prefix="t13-unit", linger=0.2)
    seen: dict[str, Any] = {}
    try:
        seen["unknown replay"] = await store.replay("nobody")
        seen["unknown stop"] = await store.stop("nobody")

        async def short() -> Any:
            yield ui.start("m1")
            yield ui.finish("stop")

        await store.start("c1", "m1", short())
        answer = await store.replay("c1")
        assert answer is not None
        seen["chunks"] = [json.loads(data) async for _, data in answer.chunks]
        seen["kept"] = await store.replay("c1") is not None  # not delivered: kept for linger
        await asyncio.sleep(0.4)
        seen["after linger"] = await store.replay("c1")

        # A worker that died mid-answer: the claim expired, no end was ever written.
        redis = store._redis
        await redis.set("t13-unit:c2:latest", "m2")
        await redis.xadd("t13-unit:c2:m2:chunks", {"begin": "1"})
        await redis.xadd("t13-unit:c2:m2:chunks", {"data": ui.encode(ui.start("m2"))})
        orphan = await store.replay("c2")
        assert orphan is not None
        seen["orphan"] = [json.loads(data) async for _, data in orphan.chunks]
    finally:
        await store.aclose()
    return seen


def test_store_unknown_linger_and_an_orphaned_answer(redis_server: RedisServer) -> None:
    seen = asyncio.run(asyncio.wait_for(_scenario(redis_server.url), 10))
    assert seen["unknown replay"] is None
    assert seen["unknown stop"] is False
    assert seen["chunks"] == [ui.start("m1"), ui.finish("stop")]
    assert seen["kept"] is True
    assert seen["after linger"] is None
    assert seen["orphan"] == [ui.start("m2"), ui.error(INTERRUPTED)]
