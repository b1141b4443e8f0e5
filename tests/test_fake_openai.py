"""The fake OpenAI server, driven by the real openai SDK (3.x, httpx2) over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from course_app import LessonServer
from course_app.fake_openai import StreamStats, create_app, reply_to, tokenize

HELLO = reply_to("hello")


@pytest.fixture(scope="module")
def server() -> Iterator[LessonServer]:
    with LessonServer(create_app(), name="t-fake-openai") as running:
        yield running


@pytest.fixture
def client(server: LessonServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="course", max_retries=0)


@pytest.fixture
def aclient(server: LessonServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="course", max_retries=0)


def stats(server: LessonServer) -> StreamStats:
    return server.app.state.streams  # type: ignore[union-attr]


USER_HELLO = [{"role": "user", "content": "hello"}]


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["course-mini"]


def test_chat_completion_without_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="course-mini", messages=USER_HELLO)
    assert completion.choices[0].message.content == HELLO
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(tokenize(HELLO))


def test_chat_stream_true_has_role_deltas_finish_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="course-mini",
        messages=[{"role": "user", "content": "count to 5"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert deltas == ["1,", " 2,", " 3,", " 4,", " 5."]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_chat_stream_wire_format_ends_with_done(server: LessonServer) -> None:
    body = {"model": "course-mini", "messages": USER_HELLO, "stream": True}
    headers = {"authorization": "Bearer course"}
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert '"object":"chat.completion.chunk"' in lines[0]


def test_chat_completions_stream_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="course-mini", messages=USER_HELLO) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert text == HELLO == final.choices[0].message.content


def test_responses_create_stream_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="course-mini", input="count to 3", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "1, 2, 3."


def test_responses_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model="course-mini", input="hello") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == HELLO == final.output_text
    assert final.usage is not None and final.usage.output_tokens == len(deltas)


def test_responses_without_streaming(client: openai.OpenAI) -> None:
    assert client.responses.create(model="course-mini", input="hi").output_text == reply_to("hi")


def test_async_client_all_streaming_calls(aclient: openai.AsyncOpenAI) -> None:
    async def run() -> list[str]:
        texts = []
        stream = await aclient.chat.completions.create(
            model="course-mini", messages=USER_HELLO, stream=True
        )
        texts.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
        async with aclient.chat.completions.stream(model="course-mini", messages=USER_HELLO) as s:
            texts.append((await s.get_final_completion()).choices[0].message.content or "")
        events = await aclient.responses.create(model="course-mini", input="hello", stream=True)
        texts.append(
            "".join([e.delta async for e in events if e.type == "response.output_text.delta"])
        )
        async with aclient.responses.stream(model="course-mini", input="hello") as s:
            texts.append((await s.get_final_response()).output_text)
        return texts

    assert asyncio.run(run()) == [HELLO] * 4


def test_same_prompt_same_bytes(server: LessonServer) -> None:
    body = {"model": "course-mini", "messages": USER_HELLO, "stream": True}
    headers = {"authorization": "Bearer course"}
    first = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers).content
    second = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers).content
    assert first == second


def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="course-mini", messages=[{"role": "user", "content": "count to 10"}], max_tokens=2
    )
    assert completion.choices[0].message.content == "1, 2,"
    assert completion.choices[0].finish_reason == "length"


def test_rate_limit_fault_is_a_429_with_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="course-mini@rate-limit", messages=USER_HELLO, stream=True
        )
    assert caught.value.response.headers["retry-after"] == "1"


def test_server_error_fault(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.responses.create(
            model="course-mini", input="hi", extra_headers={"x-fake-fault": "server-error"}
        )


def test_error_midstream_fault_raises_after_some_tokens(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="course-mini@error-midstream", messages=USER_HELLO, stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert len([r for r in received if r]) == 3


def test_error_midstream_in_responses_is_an_error_event(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model="course-mini@error-midstream", input="hello", stream=True)
    )
    assert events[-1].type == "error"
    assert "response.completed" not in [e.type for e in events]


def test_drop_fault_cuts_the_connection(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="course-mini@drop", messages=USER_HELLO, stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        list(stream)


def test_latency_fault_still_answers(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="course-mini@latency", messages=USER_HELLO)
    assert completion.choices[0].message.content == HELLO


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 400, "invalid_json"),
        (b'{"model": "course-mini"}', 400, "missing_required_parameter"),
        (b'{"model": "course-mini", "messages": []}', 400, "invalid_value"),
        (
            b'{"model": "course-mini", "messages": [{"role": "robot", "content": "x"}]}',
            400,
            "invalid_value",
        ),
        (
            b'{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
        (
            b'{"model": "course-mini@explode", "messages": [{"role": "user", "content": "x"}]}',
            400,
            None,
        ),
    ],
)
def test_bad_requests_get_the_apis_error_shape(
    server: LessonServer, body: bytes, status: int, code: str | None
) -> None:
    response = httpx.post(
        server.url + "/v1/chat/completions",
        content=body,
        headers={"authorization": "Bearer course", "content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_missing_api_key_is_401(server: LessonServer) -> None:
    assert (
        httpx.post(
            server.url + "/v1/responses", json={"model": "course-mini", "input": "x"}
        ).status_code
        == 401
    )


def test_binds_loopback_only(server: LessonServer) -> None:
    assert server.host == "127.0.0.1"


def test_client_that_leaves_is_counted_as_cancelled(
    server: LessonServer, client: openai.OpenAI
) -> None:
    before = stats(server).cancelled
    stream = client.chat.completions.create(
        model="course-mini", messages=[{"role": "user", "content": "count to 300"}], stream=True
    )
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    deadline = time.monotonic() + 5
    while stats(server).cancelled == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats(server).cancelled == before + 1
    assert any("cancelled" in line for line in server.logs)
