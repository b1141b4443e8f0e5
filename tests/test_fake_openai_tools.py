"""The fake OpenAI server's tool calls, driven by the real openai SDK over HTTP.

Chat Completions streams ``tool_calls`` deltas keyed by ``index`` (id and name only in a
call's first delta, arguments in pieces, ``finish_reason == "tool_calls"``); the Responses
API streams ``function_call`` items and their argument events. The SDK's own parsers and
stream helpers must accept both, and a malformed ``tools`` is a 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from course_app.fake_openai.app import create_app
from course_app.fake_openai.tools import named_calls
from course_app.runtime import LessonServer

MODEL = "course-mini"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False},
    {"type": "function", "name": "get_time", "parameters": {"type": "object"}, "strict": False},
]
TWO_CITIES = "get_weather city=Paris and get_weather city=Oslo"


@pytest.fixture(scope="module")
def server() -> Iterator[LessonServer]:
    with LessonServer(create_app(), name="t-fake-openai-tools") as running:
        yield running


@pytest.fixture
def client(server: LessonServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="course", max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_the_prompt_names_the_calls_and_their_arguments() -> None:
    names = ["get_weather", "get_time"]
    assert named_calls(TWO_CITIES, names) == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    prompt = 'get_time zone=UTC, then GET_WEATHER city="New York" days=3 metric=true.'
    assert named_calls(prompt, names) == [
        ("get_time", {"zone": "UTC"}),
        ("get_weather", {"city": "New York", "days": 3, "metric": True}),
    ]
    assert named_calls("what is the weather in Paris?", names) == []
    assert named_calls("city=Paris get_time", names) == [("get_time", {})]


def test_chat_stream_tool_call_deltas_are_keyed_by_index(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=user(TWO_CITIES), tools=CHAT_TOOLS, stream=True
        )
    )
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    # A call's first delta carries its id, type and name; the others only arguments.
    firsts = [d for d in deltas if d.id is not None]
    assert [(d.index, d.type, d.function and d.function.name) for d in firsts] == [
        (0, "function", "get_weather"),
        (1, "function", "get_weather"),
    ]
    assert all(d.function and d.function.arguments == "" for d in firsts)
    rest = [d for d in deltas if d.id is None]
    assert all(d.type is None and d.function and d.function.name is None for d in rest)
    assert len(rest) > 2 * 2, "arguments come in several pieces per call"
    arguments: dict[int, str] = {}
    for d in deltas:
        arguments[d.index] = arguments.get(d.index, "") + (
            (d.function and d.function.arguments) or ""
        )
    assert {i: json.loads(a) for i, a in arguments.items()} == {
        0: {"city": "Paris"},
        1: {"city": "Oslo"},
    }
    assert [c.choices[0].finish_reason for c in chunks][-1] == "tool_calls"
    assert chunks[0].choices[0].delta.content is None
    assert not any(c.choices[0].delta.content for c in chunks)


def test_chat_tool_calls_without_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=user("get_time zone=UTC"), tools=CHAT_TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("get_time", '{"zone":"UTC"}')
    ]
    assert calls[0].id.startswith("call_")


def test_the_sdk_stream_helper_accumulates_the_calls(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL, messages=user(TWO_CITIES), tools=CHAT_TOOLS
    ) as stream:
        done = [
            (e.index, e.name, e.arguments)
            for e in stream
            if e.type == "tool_calls.function.arguments.done"
        ]
        final = stream.get_final_completion()
    assert done == [(0, "get_weather", '{"city":"Paris"}'), (1, "get_weather", '{"city":"Oslo"}')]
    calls = final.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]


def test_tool_results_get_a_text_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=user(TWO_CITIES), tools=CHAT_TOOLS
    ).choices[0]
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": f"sunny {n}"}
        for n, call in enumerate(first.message.tool_calls or [])
    ]
    messages = [*user(TWO_CITIES), first.message.model_dump(exclude_none=True), *results]
    again = client.chat.completions.create(model=MODEL, messages=messages, tools=CHAT_TOOLS)
    assert again.choices[0].finish_reason == "stop"
    assert again.choices[0].message.content == "The tools returned: sunny 0 | sunny 1."


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({}, [], id="a prompt that names no tool: text"),
        pytest.param({"tool_choice": "none"}, [], id="none"),
        pytest.param({"tool_choice": "required"}, ["get_weather"], id="required"),
        pytest.param(
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            ["get_time"],
            id="forced",
        ),
    ],
)
def test_tool_choice(client: openai.OpenAI, options: dict[str, Any], expected: list[str]) -> None:
    message = (
        client.chat.completions.create(
            model=MODEL, messages=user("hello"), tools=CHAT_TOOLS, **options
        )
        .choices[0]
        .message
    )
    assert [c.function.name for c in message.tool_calls or []] == expected  # type: ignore[union-attr]
    assert (message.content is None) == bool(expected)


def test_parallel_tool_calls_false_keeps_one_call(client: openai.OpenAI) -> None:
    message = (
        client.chat.completions.create(
            model=MODEL, messages=user(TWO_CITIES), tools=CHAT_TOOLS, parallel_tool_calls=False
        )
        .choices[0]
        .message
    )
    assert [c.function.arguments for c in message.tool_calls or []] == ['{"city":"Paris"}']  # type: ignore[union-attr]


def test_a_token_limit_cuts_the_arguments(client: openai.OpenAI) -> None:
    choice = client.chat.completions.create(
        model=MODEL, messages=user("get_weather city=Paris"), tools=CHAT_TOOLS, max_tokens=3
    ).choices[0]
    assert choice.finish_reason == "length"
    assert [c.function.arguments for c in choice.message.tool_calls or []] == ['{"city']  # type: ignore[union-attr]


def test_responses_stream_function_call_events(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model=MODEL, input=TWO_CITIES, tools=RESPONSES_TOOLS, stream=True)
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert "response.output_text.delta" not in kinds
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [(e.output_index, e.item.type, e.item.name) for e in added] == [  # type: ignore[union-attr]
        (0, "function_call", "get_weather"),
        (1, "function_call", "get_weather"),
    ]
    deltas: dict[str, str] = {}
    for e in events:
        if e.type == "response.function_call_arguments.delta":
            deltas[e.item_id] = deltas.get(e.item_id, "") + e.delta
    dones = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert {e.item_id: e.arguments for e in dones} == deltas
    assert [json.loads(e.arguments) for e in dones] == [{"city": "Paris"}, {"city": "Oslo"}]
    items = [e.item for e in events if e.type == "response.output_item.done"]
    assert [(i.status, i.call_id) for i in items] == [  # type: ignore[union-attr]
        ("completed", added[0].item.call_id),  # type: ignore[union-attr]
        ("completed", added[1].item.call_id),  # type: ignore[union-attr]
    ]
    final = events[-1]
    assert final.type == "response.completed"
    assert [o.type for o in final.response.output] == ["function_call", "function_call"]


def test_responses_stream_helper_and_tool_results(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL, input="get_time zone=UTC", tools=RESPONSES_TOOLS
    ) as stream:
        for _ in stream:
            pass
        response = stream.get_final_response()
    (call,) = response.output
    assert (call.type, call.name, call.arguments) == ("function_call", "get_time", '{"zone":"UTC"}')  # type: ignore[union-attr]
    history: list[Any] = [
        *user("get_time zone=UTC"),
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "12:00"},  # type: ignore[union-attr]
    ]
    answer = client.responses.create(model=MODEL, input=history, tools=RESPONSES_TOOLS)
    assert answer.output_text == "The tools returned: 12:00."


def test_requests_without_tools_are_unchanged(client: openai.OpenAI) -> None:
    # A prompt that names a "tool" without tools in the request is echoed as before.
    completion = client.chat.completions.create(model=MODEL, messages=user("get_weather"))
    assert completion.choices[0].message.content.startswith("You said: get_weather")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("tools", "param", "code"),
    [
        pytest.param("get_weather", "tools", "invalid_type", id="not a list"),
        pytest.param([], "tools", "invalid_value", id="empty"),
        pytest.param(
            [{"type": "function"}],
            "tools[0].function",
            "missing_required_parameter",
            id="no function",
        ),
        pytest.param(
            [{"type": "function", "function": {"name": "get weather"}}],
            "tools[0].function.name",
            "invalid_value",
            id="bad name",
        ),
        pytest.param(
            [{"type": "function", "function": {"name": "f", "parameters": "{}"}}],
            "tools[0].function.parameters",
            "invalid_type",
            id="parameters as a string",
        ),
        pytest.param(
            [{"type": "retrieval", "function": {"name": "f"}}],
            "tools[0].type",
            "invalid_value",
            id="unknown type",
        ),
        pytest.param([CHAT_TOOLS[0], CHAT_TOOLS[0]], "tools", None, id="duplicate names"),
        pytest.param(
            [{"type": "function", "name": "get_weather"}],
            "tools[0].function",
            "missing_required_parameter",
            id="the Responses API's shape",
        ),
    ],
)
def test_malformed_chat_tools_are_a_400_naming_the_field(
    server: LessonServer, tools: Any, param: str, code: str | None
) -> None:
    body = {"model": MODEL, "messages": user("hello"), "tools": tools, "stream": True}
    response = httpx.post(
        server.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer x"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert param in error["message"]


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        pytest.param([{"type": "function"}], "tools[0].name", id="no name"),
        pytest.param([CHAT_TOOLS[0]], "tools[0].name", id="the Chat Completions shape"),
        pytest.param([{"type": "function", "name": "f", "strict": "yes"}], "tools[0].strict"),
    ],
)
def test_malformed_responses_tools_are_a_400(server: LessonServer, tools: Any, param: str) -> None:
    body = {"model": MODEL, "input": "hello", "tools": tools}
    response = httpx.post(
        server.url + "/v1/responses", json=body, headers={"authorization": "Bearer x"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tool_choice": "auto"}, "only allowed when 'tools' are specified"),
        ({"tools": CHAT_TOOLS, "tool_choice": "always"}, "expected 'none', 'auto', 'required'"),
        (
            {"tools": CHAT_TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "no tool named 'x'",
        ),
    ],
)
def test_a_bad_tool_choice_is_a_bad_request(
    client: openai.OpenAI, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=match):
        client.chat.completions.create(model=MODEL, messages=user("hello"), **options)


def test_the_same_request_gives_the_same_call_ids(client: openai.OpenAI) -> None:
    def ids() -> list[str]:
        message = (
            client.chat.completions.create(model=MODEL, messages=user(TWO_CITIES), tools=CHAT_TOOLS)
            .choices[0]
            .message
        )
        return [call.id for call in message.tool_calls or []]

    first = ids()
    assert first == ids()
    assert len(set(first)) == 2
