"""Lesson 10: the relay, against the course's fake OpenAI server and the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import httpx_sse
import pytest
from fastapi.testclient import TestClient

from course_app import LessonServer
from course_app.fake_openai import StreamStats
from course_app.fake_openai import create_app as create_fake_llm
from course_app.llm_settings import async_client, llm_settings


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[LessonServer]:
    with LessonServer(create_fake_llm(), name="t10-llm") as server:
        yield server


@pytest.fixture(scope="module")
def relay(exercise: ModuleType, fake_llm: LessonServer) -> Iterator[TestClient]:
    with TestClient(exercise.create_app(llm_settings(fake_llm.url))) as client:
        yield client


def chat(client: TestClient, prompt: str, simulate: str | None = None) -> list[tuple[str, dict]]:
    body = {"messages": [{"role": "user", "content": prompt}], "simulate": simulate}
    with httpx_sse.connect_sse(client, "POST", "/chat/stream", json=body) as source:
        return [(event.event, json.loads(event.data)) for event in source.iter_sse()]


def test_tokens_then_done_with_usage(relay: TestClient) -> None:
    """'count to 5' streams five token events, then one done event with the usage"""
    events = chat(relay, "count to 5")
    assert events[:-1] == [("token", {"text": t}) for t in ["1,", " 2,", " 3,", " 4,", " 5."]]
    kind, done = events[-1]
    assert kind == "done"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == 5


def test_history_is_sent_upstream(relay: TestClient) -> None:
    """the whole message history goes upstream (the last user message is answered)"""
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "count to 2"},
        ]
    }
    with httpx_sse.connect_sse(relay, "POST", "/chat/stream", json=body) as source:
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    assert [data["text"] for kind, data in events if kind == "token"] == ["1,", " 2."]
    assert events[-1][1]["usage"]["prompt_tokens"] == 8


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        ("rate-limit", "rate_limited", True),
        ("server-error", "upstream_error", True),
        ("error-midstream", "upstream_error", False),
        ("drop", "upstream_unavailable", True),
    ],
)
def test_upstream_failures_become_one_error_event(
    relay: TestClient, fault: str, code: str, retryable: bool
) -> None:
    """an upstream failure ends the stream with exactly one error event"""
    events = chat(relay, "hello", simulate=fault)
    kinds = [kind for kind, _ in events]
    assert kinds.count("error") == 1 and kinds[-1] == "error"
    assert "done" not in kinds
    error = events[-1][1]
    assert (error["code"], error["retryable"]) == (code, retryable)
    assert error["message"]


@pytest.mark.parametrize("fault", ["rate-limit", "server-error", "error-midstream", "drop"])
def test_no_internals_leak_to_the_client(
    exercise: ModuleType, relay: TestClient, fault: str
) -> None:
    """error events never carry the upstream's own error text, only a SAFE_MESSAGES text"""
    body = {"messages": [{"role": "user", "content": "hello"}], "simulate": fault}
    text = relay.post("/chat/stream", json=body).text
    for secret in ("fault", "Error code", "Traceback", "course-mini", "fake"):
        assert secret not in text
    # str(exc) can look harmless ("Connection error.") and still be the upstream's text.
    error = chat(relay, "hello", simulate=fault)[-1][1]
    assert error["message"] in exercise.SAFE_MESSAGES.values()


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user", "content": ""}]},
        {"messages": [{"role": "user", "content": "hi"}], "simulate": "explode"},
        {},
    ],
)
def test_bad_requests_are_422_before_streaming(relay: TestClient, body: dict) -> None:
    """an invalid chat request is a 422, not a stream"""
    assert relay.post("/chat/stream", json=body).status_code == 422


def test_malformed_json_is_a_4xx(relay: TestClient) -> None:
    """malformed JSON gets a 4xx, not a traceback"""
    response = relay.post(
        "/chat/stream", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500


def test_client_leaving_cancels_the_upstream(exercise: ModuleType, fake_llm: LessonServer) -> None:
    """when the client disconnects, the relay closes its upstream request"""
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    with LessonServer(
        exercise.create_app(llm_settings(fake_llm.url)), name="t10-relay"
    ) as relay_server:
        before = stats.cancelled
        body = {"messages": [{"role": "user", "content": "count to 400"}]}
        with httpx.Client(timeout=10) as client:
            with httpx_sse.connect_sse(
                client, "POST", relay_server.url + "/chat/stream", json=body
            ) as source:
                events = source.iter_sse()
                assert next(events).event == "token"
                next(events)
        deadline = time.monotonic() + 10
        while stats.cancelled == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stats.cancelled == before + 1, "the upstream kept generating after the client left"
        # and the relay still serves the next chat
        with httpx.Client(timeout=10) as client:
            body = {"messages": [{"role": "user", "content": "count to 2"}]}
            with httpx_sse.connect_sse(
                client, "POST", relay_server.url + "/chat/stream", json=body
            ) as source:
                assert [e.event for e in source.iter_sse()] == ["token", "token", "done"]


def test_closing_the_relay_closes_the_upstream(
    exercise: ModuleType, fake_llm: LessonServer
) -> None:
    """closing relay_tokens() at a yield (aclose()) closes the upstream request too"""
    # sse-starlette closes the generator this way when a send fails or times out: it is
    # suspended at a yield, so no cancellation reaches the SDK's stream; only the relay's
    # own `async with stream:` closes it. (A client that simply leaves usually cancels the
    # generator while it waits for a token, and the SDK cleans up on that by itself.)
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    settings = llm_settings(fake_llm.url)

    async def run() -> int:
        client = async_client(settings)
        try:
            before = stats.cancelled
            messages = [{"role": "user", "content": "count to 400"}]
            relay = exercise.relay_tokens(client, settings.model, messages)
            for _ in range(3):
                assert (await anext(relay))["event"] == "token"
            await relay.aclose()
            deadline = time.monotonic() + 5  # a bound, not a speed requirement
            while time.monotonic() < deadline:
                if stats.cancelled != before:
                    break
                # Poll on this loop: leaving asyncio.run() would finalize the SDK's stream.
                await asyncio.sleep(0.02)
            return stats.cancelled - before
        finally:
            await client.close()

    assert asyncio.run(run()) == 1, (
        "the upstream kept generating after relay_tokens() was closed at a yield"
    )
