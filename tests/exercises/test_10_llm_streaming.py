"""Lesson 10: the Responses API relay, against the course's fake OpenAI server and the SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import httpx_sse
import pytest
from fastapi.testclient import TestClient

from course_app.fake_openai import async_client, llm_settings
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai.app import StreamStats
from course_app.runtime import LessonServer

# verify=False on loopback clients: plain HTTP, and no CA bundle to load (0.05-0.2 s of CPU each).
# An answer that never ends by itself: "the client left before the end" holds at any pace.
ENDLESS = "count forever"
# Rarely (1 run in a clean-clone CI run; 0 in 30 checker runs), the SDK's own byte iterator
# (httpx2's Response.aiter_raw) of an upstream response that the relay closed is finalized by
# the garbage collector after the TestClient's event loop has gone, during a later test. That
# is library bookkeeping, not the learner's relay: the tests below prove the upstream request
# is closed by what the fake server counts. Other unraisable exceptions still fail the test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object Response.aiter_raw"
    ":pytest.PytestUnraisableExceptionWarning"
)
BOUND = 5.0  # seconds to wait for the upstream to be cancelled: a bound, not a speed test


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[LessonServer]:
    with LessonServer(create_fake_llm(), name="t10-llm") as server:
        yield server


@pytest.fixture(scope="module")
def relay(exercise: ModuleType, fake_llm: LessonServer) -> Iterator[TestClient]:
    with TestClient(exercise.create_app(llm_settings(fake_llm.url))) as client:
        yield client


def chat(client: TestClient, prompt: str, **options: object) -> list[tuple[str, dict]]:
    body = {"messages": [{"role": "user", "content": prompt}], **options}
    with httpx_sse.connect_sse(client, "POST", "/chat/stream", json=body) as source:
        return [(event.event, json.loads(event.data)) for event in source.iter_sse()]


def assert_one_error_at_the_end(
    events: list[tuple[str, dict]], tokens: int, code: str, retryable: bool
) -> None:
    kinds = [kind for kind, _ in events]
    assert kinds == ["token"] * tokens + ["error"], f"expected {tokens} tokens, one error: {kinds}"
    error = events[-1][1]
    assert (error["code"], error["retryable"]) == (code, retryable), error
    assert error["message"]


def cancelled_since(stats: StreamStats, before: int) -> int:
    deadline = time.monotonic() + BOUND
    while stats.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.02)
    return stats.cancelled - before


def test_tokens_then_done_with_usage(relay: TestClient) -> None:
    """'count to 5' streams five token events, then one done event with status and usage

    Which event type carries a piece of the answer, and which attribute holds its text?
    On the terminal event, where do the status and the usage live (look inside
    `event.response`)?
    """
    events = chat(relay, "count to 5")
    assert events[:-1] == [("token", {"text": t}) for t in ["1,", " 2,", " 3,", " 4,", " 5."]]
    kind, done = events[-1]
    assert kind == "done", events[-1]
    assert done["status"] == "completed"
    assert done["usage"]["output_tokens"] == 5


def test_a_cut_short_answer_ends_incomplete(relay: TestClient) -> None:
    """with max_tokens=2, two tokens arrive, then done with status 'incomplete'

    Does `max_output_tokens` reach `responses.create()`? A stream cut by the token limit
    does not end with "response.completed": which terminal event comes instead?
    """
    events = chat(relay, "count to 10", max_tokens=2)
    assert [data for kind, data in events if kind == "token"] == [{"text": "1,"}, {"text": " 2,"}]
    kind, done = events[-1]
    assert kind == "done", events[-1]
    assert done["status"] == "incomplete"
    assert done["usage"]["output_tokens"] == 2


def test_history_is_sent_upstream(relay: TestClient) -> None:
    """the whole message history goes upstream (the last user message is answered)

    Do you pass the whole `messages` list as `input=`? The Responses API accepts the same
    role/content dicts as Chat Completions.
    """
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
    assert events[-1][1]["usage"]["input_tokens"] == 8


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        pytest.param("rate-limit", "rate_limited", True, id="429"),
        pytest.param("server-error", "upstream_error", True, id="500"),
    ],
)
def test_refused_requests_become_one_error_event(
    relay: TestClient, fault: str, code: str, retryable: bool
) -> None:
    """an upstream that refuses the request (429, 500) gives one error event and no done

    `responses.create()` raises before any event: which openai exception is a 429, and
    which one a 500? RateLimitError is itself an APIStatusError: which except clause must
    come first?
    """
    assert_one_error_at_the_end(chat(relay, "hello", simulate=fault), 0, code, retryable)


def test_an_error_event_from_upstream_ends_the_stream(relay: TestClient) -> None:
    """an 'error' event from upstream after 3 tokens becomes one error event, not retryable

    The SDK does not raise for a failure the Responses API reports as an event: you see
    an event whose type is "error" (or "response.failed"). Do you turn it into your error
    event, and send no done after it?
    """
    events = chat(relay, "hello", simulate="error-midstream")
    assert_one_error_at_the_end(events, 3, "upstream_error", False)


def test_a_dropped_connection_is_retryable(relay: TestClient) -> None:
    """a connection dropped after 3 tokens becomes one 'upstream_unavailable' error event

    Which openai exception does the SDK raise when the body stops in the middle (there is
    no status code to look at)? It is an APIError too: does its except clause come before
    the general one?
    """
    events = chat(relay, "hello", simulate="drop")
    assert_one_error_at_the_end(events, 3, "upstream_unavailable", True)


def test_a_stream_without_its_terminal_event_is_an_error(relay: TestClient) -> None:
    """a stream that stops after 3 tokens without a terminal event ends with an error, not done

    The Responses API sends no [DONE]: only "response.completed" / "response.incomplete"
    say the answer is whole. After the loop, how do you know whether one arrived?
    """
    events = chat(relay, "hello", simulate="truncate")
    assert_one_error_at_the_end(events, 3, "upstream_unavailable", True)


def test_a_malformed_chunk_is_an_internal_error(
    relay: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """a chunk that is not JSON ends the stream with one 'internal' error event, logged

    Which exception does the SDK raise for a frame it cannot parse: is it an openai error
    at all? What catches everything else (but never CancelledError or GeneratorExit), and
    which logger method records the traceback?
    """
    events = chat(relay, "hello", simulate="bad-json")
    assert_one_error_at_the_end(events, 3, "internal", False)
    logged = [r for r in caplog.records if r.name.startswith("lesson") and r.exc_info]
    assert logged, "log the unexpected exception with logger.exception(...) (it has a traceback)"


@pytest.mark.parametrize(
    "fault", ["rate-limit", "server-error", "error-midstream", "drop", "truncate", "bad-json"]
)
def test_no_internals_leak_to_the_client(
    exercise: ModuleType, relay: TestClient, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """error events carry only a SAFE_MESSAGES text; the details go to the log

    Where does the exception's own text go: into the event, or into `logger.warning(...)`?
    Even a harmless-looking str(exc) ("Connection error.") is the upstream's text, not
    yours.
    """
    body = {"messages": [{"role": "user", "content": "hello"}], "simulate": fault}
    text = relay.post("/chat/stream", json=body).text
    for secret in ("fault", "Error code", "Traceback", "course-mini", "fake", "Expecting", "char "):
        assert secret not in text
    error = chat(relay, "hello", simulate=fault)[-1][1]
    assert error["message"] in exercise.SAFE_MESSAGES.values()
    logged = [r for r in caplog.records if r.name.startswith("lesson")]
    assert any(r.levelno >= logging.WARNING for r in logged), "log what went wrong"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"messages": []}, id="no messages"),
        pytest.param({"messages": [{"role": "robot", "content": "hi"}]}, id="unknown role"),
        pytest.param({"messages": [{"role": "user", "content": ""}]}, id="empty content"),
        pytest.param(
            {"messages": [{"role": "user", "content": "hi"}], "simulate": "explode"},
            id="unknown fault",
        ),
        pytest.param({}, id="empty body"),
    ],
)
def test_bad_requests_are_422_before_streaming(relay: TestClient, body: dict) -> None:
    """an invalid chat request is a 422, not a stream

    This passes before you write a line: FastAPI checks the body against ChatRequest
    before the route runs. If it fails, what did you change in ChatRequest?
    """
    assert relay.post("/chat/stream", json=body).status_code == 422


def test_malformed_json_is_a_4xx(relay: TestClient) -> None:
    """malformed JSON gets a 4xx, not a traceback

    This passes before you write a line: FastAPI refuses a body it cannot parse. If it
    fails, what did you change in the route?
    """
    response = relay.post(
        "/chat/stream", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500


def read_tokens_and_leave(server: LessonServer, body: dict, count: int) -> None:
    with httpx.Client(timeout=10, verify=False) as client:
        try:
            with httpx_sse.connect_sse(
                client, "POST", server.url + "/chat/stream", json=body
            ) as source:
                events = source.iter_sse()
                for _ in range(count):
                    assert next(events).event == "token"
        except (httpx.RemoteProtocolError, StopIteration):
            # A logged exception ends its log line with " (Type: message)".
            errors = [line.splitlines()[-1].strip() for line in server.logs if "ERROR" in line]
            why = f" (server log: {errors[-1][1:-1]})" if errors else ""
            pytest.fail(f"the relay's stream ended before {count} tokens arrived{why}")


def test_client_leaving_cancels_the_upstream(exercise: ModuleType, fake_llm: LessonServer) -> None:
    """when the client disconnects, the relay closes its upstream request

    The client leaves while the answer is still streaming: the relay's generator is
    cancelled or closed. Is the upstream stream closed on that path too (`async with
    stream:`)?
    """
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    settings = llm_settings(fake_llm.url)
    with LessonServer(exercise.create_app(settings), name="t10-relay") as relay_server:
        before = stats.cancelled
        body = {"messages": [{"role": "user", "content": ENDLESS}]}
        read_tokens_and_leave(relay_server, body, 2)
        assert cancelled_since(stats, before) == 1, (
            "the upstream kept generating after the client left"
        )
        # and the relay still serves the next chat
        with httpx.Client(timeout=10, verify=False) as client:
            body = {"messages": [{"role": "user", "content": "count to 2"}]}
            with httpx_sse.connect_sse(
                client, "POST", relay_server.url + "/chat/stream", json=body
            ) as source:
                assert [e.event for e in source.iter_sse()] == ["token", "token", "done"]


def test_closing_the_relay_closes_the_upstream(
    exercise: ModuleType, fake_llm: LessonServer
) -> None:
    """closing relay_response() at a yield (aclose()) closes the upstream request too

    sse-starlette closes your generator this way when a send fails or times out: no
    exception reaches the SDK's stream, it is just abandoned. What in your code closes it
    when the generator is closed at a `yield`?
    """
    # Suspended at a yield, the generator gets GeneratorExit there and nothing else: only
    # the relay's own `async with stream:` closes the SDK's stream. (A client that simply
    # leaves usually cancels the generator while it waits for a token instead.)
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    settings = llm_settings(fake_llm.url)

    async def run() -> int:
        client = async_client(settings)
        before = stats.cancelled
        try:
            messages = [{"role": "user", "content": ENDLESS}]
            relay = exercise.relay_response(client, settings.model, messages)
            for _ in range(3):
                assert (await anext(relay))["event"] == "token"
            await relay.aclose()
            # Wait on this loop (in a thread): leaving asyncio.run() would finalize the
            # SDK's stream, and the upstream would close however the relay was written.
            return await asyncio.to_thread(cancelled_since, stats, before)
        finally:
            await client.close()

    assert asyncio.run(run()) == 1, (
        "the upstream kept generating after relay_response() was closed at a yield"
    )
