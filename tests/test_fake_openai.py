"""The fake OpenAI server, driven by the real openai SDK (3.x, httpx2) over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from course_app.fake_openai.app import StreamStats, create_app, reply_to, tokenize
from course_app.runtime import LessonServer

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
    """Close it (``async with``) on the loop that used it. Left open, the SDK closes it when
    it is garbage-collected, in a task on whatever loop runs then: "Event loop is closed",
    logged in another test's server."""
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
        async with aclient:  # closed on its own loop: see the fixture
            return await streaming_calls()

    async def streaming_calls() -> list[str]:
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


def test_drop_fault_logs_one_line_not_a_crash(client: openai.OpenAI, server: LessonServer) -> None:
    logged = len(server.logs)
    with pytest.raises(openai.APIConnectionError):
        list(client.responses.create(model="course-mini@drop", input="hello", stream=True))
    new = server.logs[logged:]
    assert [line for line in new if "fault 'drop'" in line], new
    assert not [line for line in new if "Exception in ASGI application" in line], new


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_bad_json_fault_sends_a_frame_cut_in_half(server: LessonServer, path: str) -> None:
    body = {"model": "course-mini@bad-json", "stream": True}
    body |= {"messages": USER_HELLO} if "chat" in path else {"input": "hello"}
    headers = {"authorization": "Bearer course"}
    with httpx.stream("POST", server.url + path, json=body, headers=headers) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    for frame in data[:-1]:
        json.loads(frame)
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[-1])


def test_the_sdk_raises_a_json_error_on_the_bad_json_fault(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="course-mini@bad-json", messages=USER_HELLO, stream=True
    )
    received = []
    with pytest.raises(json.JSONDecodeError):  # not an openai.APIError: a relay must expect it
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert len([r for r in received if r]) == 3


def test_truncate_fault_ends_the_body_without_the_final_events(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="course-mini@truncate", messages=USER_HELLO, stream=True
        )
    )
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 4  # role + 3 tokens
    events = list(client.responses.create(model="course-mini@truncate", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds.count("response.output_text.delta") == 3
    assert kinds[-1] == "response.output_text.delta"  # no response.completed, no error


def test_count_forever_streams_past_any_count(client: openai.OpenAI) -> None:
    stream = client.responses.create(model="course-mini", input="count forever", stream=True)
    deltas = []
    for event in stream:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
            if len(deltas) == 600:
                break
    stream.close()
    assert deltas[:3] == ["1,", " 2,", " 3,"] and deltas[-1] == " 600,"


def test_count_forever_needs_streaming_or_a_limit(client: openai.OpenAI) -> None:
    forever = [{"role": "user", "content": "count forever"}]
    with pytest.raises(openai.BadRequestError, match="never ends"):
        client.chat.completions.create(model="course-mini", messages=forever)
    completion = client.chat.completions.create(model="course-mini", messages=forever, max_tokens=3)
    assert completion.choices[0].message.content == "1, 2, 3,"
    assert completion.choices[0].finish_reason == "length"
    response = client.responses.create(
        model="course-mini", input="count forever", max_output_tokens=2
    )
    assert (response.status, response.output_text) == ("incomplete", "1, 2,")


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


def test_responses_cut_by_max_output_tokens_end_incomplete(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="course-mini",
            input="count to 10",
            instructions="Count.",
            max_output_tokens=2,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.incomplete" and "response.completed" not in kinds
    final = events[-1].response
    assert final.status == "incomplete"
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert (final.instructions, final.max_output_tokens) == ("Count.", 2)
    assert final.output_text == "1, 2,"
    assert final.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_responses_without_streaming_cut_by_max_output_tokens(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="course-mini", input="count to 10", max_output_tokens=3
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 3
    assert response.output_text == "1, 2, 3,"
    assert response.usage is not None and response.usage.output_tokens == 3


def test_responses_echo_instructions_when_completed(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="course-mini", input="count to 2", instructions="Count.", max_output_tokens=50
    )
    assert response.status == "completed" and response.incomplete_details is None
    assert (response.instructions, response.max_output_tokens) == ("Count.", 50)


CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "code", "param"),
    [
        (
            CHAT,
            {"model": "course-mini", "messages": HI, "stream": "true"},
            "invalid_type",
            "stream",
        ),
        (CHAT, {"model": "course-mini", "messages": HI, "stream": 1}, "invalid_type", "stream"),
        (
            RESPONSES,
            {"model": "course-mini", "input": "hi", "stream": "yes"},
            "invalid_type",
            "stream",
        ),
        (
            CHAT,
            {"model": "course-mini", "messages": [{"role": "user"}]},
            "missing_required_parameter",
            "messages[0].content",
        ),
        (
            CHAT,
            {"model": "course-mini", "messages": [*HI, {"role": "user", "content": None}]},
            "invalid_type",
            "messages[1].content",
        ),
        (
            CHAT,
            {"model": "course-mini", "messages": [*HI, {"role": "user", "content": 5}]},
            "invalid_type",
            "messages[1].content",
        ),
        (
            CHAT,
            {"model": "course-mini", "messages": [{"role": "robot", "content": "x"}]},
            "invalid_value",
            "messages[0].role",
        ),
        (
            CHAT,
            {"model": "course-mini", "messages": HI, "stream_options": {"include_usage": True}},
            None,
            "stream_options",
        ),
        (
            CHAT,
            {
                "model": "course-mini",
                "messages": HI,
                "stream": False,
                "stream_options": {"include_usage": True},
            },
            None,
            "stream_options",
        ),
        (
            RESPONSES,
            {"model": "course-mini", "input": "hi", "stream_options": {"include_usage": True}},
            None,
            "stream_options",
        ),
        (
            CHAT,
            {"model": "course-mini", "messages": HI, "max_tokens": "5"},
            "invalid_type",
            "max_tokens",
        ),
        (RESPONSES, {"model": "course-mini"}, "missing_required_parameter", "input"),
        (RESPONSES, {"model": "course-mini", "input": None}, "missing_required_parameter", "input"),
    ],
)
def test_invalid_parameters_are_400_with_the_param_path(
    server: LessonServer, path: str, body: dict, code: str | None, param: str | None
) -> None:
    response = httpx.post(server.url + path, json=body, headers={"authorization": "Bearer course"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert error["message"]
    if param == "stream_options":
        assert error["message"] == (
            "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        )


def test_unknown_chat_parameters_are_400(server: LessonServer) -> None:
    body = {"model": "course-mini", "messages": HI, "temprature": 0.5, "top_k": 3}
    response = httpx.post(server.url + CHAT, json=body, headers={"authorization": "Bearer course"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Unrecognized request arguments supplied: temprature, top_k",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_unknown_responses_parameter_is_400(server: LessonServer) -> None:
    body = {"model": "course-mini", "input": "hi", "max_tokens": 5}
    response = httpx.post(
        server.url + RESPONSES, json=body, headers={"authorization": "Bearer course"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("max_tokens", "unknown_parameter")


def test_known_parameters_the_fake_ignores_are_accepted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="course-mini", messages=USER_HELLO, temperature=0.2, seed=7, user="learner", n=1
    )
    assert completion.choices[0].message.content == HELLO
    response = client.responses.create(
        model="course-mini", input="hi", temperature=0.2, store=False, metadata={"k": "v"}
    )
    assert response.output_text == reply_to("hi")


def test_the_sdk_sees_unknown_parameters_as_bad_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument"):
        client.chat.completions.create(
            model="course-mini", messages=USER_HELLO, extra_body={"temprature": 0}
        )
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.chat.completions.create(
            model="course-mini", messages=USER_HELLO, stream_options={"include_usage": True}
        )


def test_an_assistant_message_may_omit_content_when_it_calls_tools(
    client: openai.OpenAI,
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    completion = client.chat.completions.create(
        model="course-mini",
        messages=[
            {"role": "user", "content": "count to 1"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ],
    )
    assert completion.choices[0].message.content == "1."


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/chat/completion", 404),
        ("GET", "/v1/nothing", 404),
        ("GET", "/", 404),
        ("GET", "/openapi.json", 404),
        ("GET", "/v1/chat/completions", 405),
    ],
)
def test_unknown_paths_get_the_apis_error_shape(
    server: LessonServer, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, server.url + path, headers={"authorization": "Bearer course"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if status == 404:
        assert error["message"] == f"Invalid URL ({method} {path})"


def test_the_sdk_sees_an_unknown_path_as_not_found(server: LessonServer) -> None:
    client = openai.OpenAI(base_url=server.url + "/v2", api_key="course", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        client.models.list()
