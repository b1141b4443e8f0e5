"""Lesson 13's protocol versions: one answer on four wires, and what the AI SDK makes of each.

The demo (``course_app.demos.ai_sdk_protocols``) serves the reference solution's relay of
the fake model as the UI message stream, AI SDK 4's data stream protocol, plain text and
lesson 10's own SSE events. The first tests check those bytes from Python; the last runs
``tests/node/ai_sdk_protocols.test.mjs``, where the SDK's own chat (``ai``, pinned in
``tests/node/package.json``) reads each wire: the answer, nothing at all after a ``200``
(the old data stream, plain text through ``DefaultChatTransport``), the raw SSE lines as
text, or a validation error. Without Node that one is skipped with the reason (failed in CI).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from course_app.checking import load_exercise
from course_app.demos import ai_sdk_protocols
from course_app.fake_openai import async_client, llm_settings
from course_app.fake_openai import create_app as create_fake_llm
from course_app.runtime import LessonServer, set_pace
from course_app.streams import ui_message_stream as ui
from tests.node_client import node_binary, run_node_tests

TEST_FILE = "ai_sdk_protocols.test.mjs"
QUESTION = {
    "id": "c1",
    "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "count to 3"}]}],
    "trigger": "submit-message",
    "messageId": None,
}
# AI SDK 4's data stream parts (formatDataStreamPart in @ai-sdk/ui-utils): the code, and the
# type of the JSON value its parser accepts.
DATA_STREAM_PARTS = {"0": str, "3": str, "d": dict, "e": dict, "f": dict}


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned packages installed (``npm ci`` the first time)."""
    return node_binary()


@pytest.fixture(scope="module")
def demo() -> Iterator[LessonServer]:
    # The servers run in this process, so set_pace reaches the fake model: tokens 10 ms apart.
    set_pace(0.2)
    solution = load_exercise("13_capstone", "solutions")
    try:
        with LessonServer(create_fake_llm(), name="t13-protocols-llm") as fake:
            settings = llm_settings(fake.url)

            async def answer(messages: list[dict[str, str]]) -> AsyncIterator[ui.Chunk]:
                async with async_client(settings) as llm:
                    async for chunk in solution.answer_chunks(
                        llm, settings.model, messages, "msg_1"
                    ):
                        yield chunk

            app = ai_sdk_protocols.create_app(answer)
            with LessonServer(app, name="t13-protocols") as server:
                yield server
    finally:
        set_pace(None)


def post(server: LessonServer, wire: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/{wire}", json=QUESTION, timeout=10)


def test_the_ui_message_stream(demo: LessonServer) -> None:
    response = post(demo, "ui-message-stream")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers[ui.HEADER] == "v1"
    data = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert data[-1] == ui.DONE
    message = ui.assemble(json.loads(item) for item in data[:-1])
    assert (message.id, message.text, message.ending) == ("msg_1", "1, 2, 3.", "finish")


def test_the_old_data_stream_protocol(demo: LessonServer) -> None:
    response = post(demo, "data-stream")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-vercel-ai-data-stream"] == "v1"
    assert ui.HEADER not in response.headers
    assert response.text == (
        'f:{"messageId":"msg_1"}\n'
        '0:"1,"\n0:" 2,"\n0:" 3."\n'
        'e:{"finishReason":"stop","isContinued":false}\n'
        'd:{"finishReason":"stop"}\n'
    )
    # Each line as AI SDK 4's parseDataStreamPart reads it: a known code, ':', JSON of its type.
    for line in response.text.splitlines():
        code, _, value = line.partition(":")
        assert isinstance(json.loads(value), DATA_STREAM_PARTS[code]), line
    # No line is an SSE `data:` field: ai 5 and later find nothing to read in it.
    assert not any(line.startswith("data:") for line in response.text.splitlines())


def test_plain_text_and_events_of_your_own(demo: LessonServer) -> None:
    text = post(demo, "text-stream")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == "1, 2, 3."
    assert not {ui.HEADER, "x-vercel-ai-data-stream"} & set(text.headers)

    events = post(demo, "token-events")
    assert events.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert events.text.startswith('event: token\ndata: {"text": "1,"}\n\n')
    assert events.text.endswith('event: done\ndata: {"status": "finish"}\n\n')


def test_an_error_on_the_older_wires() -> None:
    failed = ui.error("The model is busy. Try again in a moment.")
    assert ai_sdk_protocols.data_stream_lines(failed) == [
        '3:"The model is busy. Try again in a moment."\n'
    ]
    assert ai_sdk_protocols.plain_text(failed) == "\n\nThe model is busy. Try again in a moment."
    # Parts the older wires have no place for send nothing.
    for chunk in [ui.text_start("text-1"), ui.text_end("text-1"), ui.abort()]:
        assert ai_sdk_protocols.data_stream_lines(chunk) == []
        assert ai_sdk_protocols.plain_text(chunk) == ""


def test_what_the_ai_sdk_chat_shows_on_each_wire(node: str, demo: LessonServer) -> None:
    run_node_tests(node, TEST_FILE, {"PROTOCOLS_URL": demo.url})
