"""Client timeouts against the fake server's ``stall`` fault (lesson 10, "Client timeouts").

What the lesson claims, shown with outcomes rather than speeds: httpx's ``read`` timeout is
the longest silence between two chunks, not the length of the response; ``read=None`` waits
through a stall forever, so an overall deadline (``asyncio.timeout``) must end it; the
openai SDK raises ``APITimeoutError`` for a read timeout mid-stream and does not retry it,
while a request that times out before its response starts is retried ``max_retries`` times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import httpx_sse
import openai
import pytest

from course_app.fake_openai.app import StreamStats, create_app
from course_app.runtime import LessonServer

READ = 0.5  # seconds of silence a client accepts: far above the fake's gaps at any pace
BOUND = 5.0  # seconds to wait for the fake to see the client go: a bound, not a speed test
HEADERS = {"authorization": "Bearer course"}


@pytest.fixture(scope="module")
def server() -> Iterator[LessonServer]:
    with LessonServer(create_app(), name="t-fake-openai-timeouts") as running:
        yield running


def stats(server: LessonServer) -> StreamStats:
    return server.app.state.streams  # type: ignore[union-attr]


def chat_body(prompt: str) -> dict[str, object]:
    return {
        "model": "course-mini",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }


def cancelled_so_far(server: LessonServer) -> int:
    """Cancelled streams, once the previous test's stream has ended: the server is shared,
    and the fake can notice a client that left only after that test has returned."""
    deadline = time.monotonic() + BOUND
    while stats(server).open and time.monotonic() < deadline:
        time.sleep(0.02)
    return stats(server).cancelled


def cancelled_since(server: LessonServer, before: int, expected: int = 1) -> int:
    deadline = time.monotonic() + BOUND
    while stats(server).cancelled - before < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return stats(server).cancelled - before


def test_httpx_default_timeout_is_five_seconds_for_every_read() -> None:
    assert httpx.Client().timeout == httpx.Timeout(5.0)
    assert httpx.Timeout(10, read=None).read is None


def test_a_stall_is_a_read_timeout_after_the_tokens_that_came(server: LessonServer) -> None:
    before = cancelled_so_far(server)
    tokens = 0
    with httpx.Client(timeout=httpx.Timeout(10, read=READ)) as client:
        with pytest.raises(httpx.ReadTimeout):
            with httpx_sse.connect_sse(
                client,
                "POST",
                server.url + "/v1/chat/completions",
                json=chat_body("hello"),
                headers={**HEADERS, "x-fake-fault": "stall"},
            ) as source:
                for event in source.iter_sse():
                    tokens += '"content":"' in event.data and '"content":""' not in event.data
    assert tokens == 3
    assert cancelled_since(server, before) == 1, "the stalled upstream saw its client go"


def test_read_is_the_gap_between_chunks_not_the_whole_response(server: LessonServer) -> None:
    # An answer that never ends, read for several read timeouts: no ReadTimeout, because
    # no single gap between two chunks comes near it.
    lasted = 0.0
    with httpx.Client(timeout=httpx.Timeout(10, read=READ)) as client:
        with httpx_sse.connect_sse(
            client,
            "POST",
            server.url + "/v1/chat/completions",
            json=chat_body("count forever"),
            headers=HEADERS,
        ) as source:
            started = time.monotonic()
            for _ in source.iter_sse():
                lasted = time.monotonic() - started
                if lasted > 3 * READ:
                    break
    assert lasted > 3 * READ


def test_read_none_needs_an_overall_deadline(server: LessonServer) -> None:
    before = cancelled_so_far(server)

    async def read_with_deadline() -> tuple[int, str]:
        tokens = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            try:
                async with asyncio.timeout(3 * READ):  # the whole answer's budget
                    async with httpx_sse.aconnect_sse(
                        client,
                        "POST",
                        server.url + "/v1/chat/completions",
                        json=chat_body("hello"),
                        headers={**HEADERS, "x-fake-fault": "stall"},
                    ) as source:
                        async for event in source.aiter_sse():
                            tokens += (
                                '"content":"' in event.data and '"content":""' not in event.data
                            )
            except TimeoutError:
                return tokens, "deadline"
        return tokens, "finished"

    assert asyncio.run(read_with_deadline()) == (3, "deadline")
    assert cancelled_since(server, before) == 1


def test_the_sdk_does_not_retry_a_read_timeout_mid_stream(server: LessonServer) -> None:
    client = openai.OpenAI(
        base_url=server.url + "/v1",
        api_key="course",
        timeout=httpx.Timeout(10, read=READ),
        max_retries=2,
    )
    started = stats(server).started
    tokens = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in client.chat.completions.create(
            model="course-mini",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            extra_headers={"x-fake-fault": "stall"},
        ):
            tokens += [c.delta.content for c in chunk.choices if c.delta.content]
    assert len(tokens) == 3
    assert stats(server).started - started == 1, "one request: no retry once the stream began"
    assert issubclass(openai.APITimeoutError, openai.APIConnectionError)


def test_the_sdk_retries_a_timeout_before_the_response_starts(server: LessonServer) -> None:
    # Without streaming, the whole answer comes before the response does: a stall is then a
    # timeout before the first byte, and the SDK sends the request again, max_retries times.
    client = openai.OpenAI(
        base_url=server.url + "/v1",
        api_key="course",
        timeout=httpx.Timeout(10, read=READ),
        max_retries=2,
    )
    started = stats(server).started
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="course-mini",
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"x-fake-fault": "stall"},
        )
    assert stats(server).started - started == 3, "the first request and two retries"


def test_the_sdk_defaults() -> None:
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")
    assert client.max_retries == 2
    assert (client.timeout.read, client.timeout.connect) == (600, 5.0)  # type: ignore[union-attr]
