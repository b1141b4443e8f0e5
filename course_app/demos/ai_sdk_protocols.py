"""Lesson 13's protocol demo: one answer, the wires a chat frontend may get.

``create_app(answer)`` serves the same answer, the UI message chunks that ``answer(messages)``
yields, in four formats, each at its own ``POST`` route taking the chat request the AI SDK
sends (``{id, messages, trigger, messageId}``):

- ``/api/ui-message-stream``: the **UI message stream** (AI SDK 5 and later, what the course
  speaks): SSE, one JSON chunk per ``data:`` line, ``data: [DONE]``, the header
  ``x-vercel-ai-ui-message-stream: v1``. ``DefaultChatTransport`` (``useChat``'s default)
  reads it.
- ``/api/data-stream``: the older **data stream protocol** of AI SDK 3.x and 4.x
  (``toDataStreamResponse()``): ``text/plain``, one ``<code>:<JSON>`` line per part (``f:``
  a step starts, ``0:`` a piece of text, ``3:`` an error, ``e:`` the step's end, ``d:`` the
  message's end), the header ``x-vercel-ai-data-stream: v1``. The codes and the header
  are AI SDK 4's (``formatDataStreamPart`` in ``@ai-sdk/ui-utils``); usage figures are left
  out (they are optional in its parser). ``ai`` 5 and later do not read it: the SSE parser
  finds no ``data:`` line in it, so the client gets a 200 and no chunk at all.
- ``/api/text-stream``: **plain text**, the pieces of text and nothing else
  (``toTextStreamResponse()``), which ``TextStreamChatTransport`` reads. It cannot say how
  the answer ended: an error's text (safe to show, see ``ui.error``) is appended to the
  text, on a line of its own.
- ``/api/token-events``: SSE events of an app's own design, lesson 10's ``event: token``
  with ``data: {"text": ...}``, then ``event: done``: valid SSE that ``DefaultChatTransport``
  rejects (its data is not a UI message chunk).

The lesson sends the same answer over all four to show what a mismatch between server and
client looks like; the encoders are separate functions so that tests can check the bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse

from course_app.streams import ui_message_stream as ui

# The model's answer as UI message chunks, for a history in the OpenAI shape
# ({"role", "content"} dicts): lesson 13's relay, or anything that yields chunks.
Answer = Callable[[list[dict[str, str]]], AsyncIterator[ui.Chunk]]

DATA_STREAM_HEADER = "x-vercel-ai-data-stream"  # AI SDK 3.x/4.x: the data stream protocol
PLAIN_TEXT = "text/plain; charset=utf-8"  # both older wires' content type


def _part(code: str, value: object) -> str:
    # formatDataStreamPart: the code, a colon, JSON.stringify(value), a newline.
    return f"{code}:{json.dumps(value, separators=(',', ':'), ensure_ascii=False)}\n"


def data_stream_lines(chunk: ui.Chunk) -> list[str]:
    """One UI message chunk as lines of the data stream protocol (none for those it lacks).

    Text parts have no start or end there, and a stop has no part of its own: the body
    just ends.
    """
    kind = chunk["type"]
    if kind == "start":
        return [_part("f", {"messageId": chunk.get("messageId", "")})]
    if kind == "text-delta":
        return [_part("0", chunk["delta"])]
    if kind == "error":
        return [_part("3", chunk["errorText"])]
    if kind == "finish":
        reason = chunk.get("finishReason", "stop")
        return [
            _part("e", {"finishReason": reason, "isContinued": False}),
            _part("d", {"finishReason": reason}),
        ]
    return []


def plain_text(chunk: ui.Chunk) -> str:
    """One UI message chunk as plain text: its text, an error's sentence, nothing else."""
    if chunk["type"] == "text-delta":
        return chunk["delta"]
    if chunk["type"] == "error":
        return f"\n\n{chunk['errorText']}"
    return ""


def token_event(chunk: ui.Chunk) -> dict[str, str] | None:
    """One UI message chunk as lesson 10's own events (sse-starlette's dict), or None."""
    if chunk["type"] == "text-delta":
        return {"event": "token", "data": json.dumps({"text": chunk["delta"]})}
    if chunk["type"] == "error":
        return {"event": "error", "data": json.dumps({"message": chunk["errorText"]})}
    if chunk["type"] in ui.TERMINAL:
        return {"event": "done", "data": json.dumps({"status": chunk["type"]})}
    return None


def create_app(answer: Answer) -> FastAPI:
    """The demo app: ``answer``'s chunks over the four wires (see the module docstring)."""
    app = FastAPI(title="Lesson 13: one answer, three AI SDK wires")

    @app.post("/api/ui-message-stream")
    async def ui_message_stream(body: ui.ChatRequest) -> EventSourceResponse:
        async def events() -> AsyncIterator[dict[str, str]]:
            async for chunk in answer(ui.model_messages(body.messages)):
                yield {"data": ui.encode(chunk)}
            yield {"data": ui.DONE}

        return EventSourceResponse(events(), headers=ui.HEADERS, sep="\n")

    @app.post("/api/data-stream")
    async def data_stream(body: ui.ChatRequest) -> StreamingResponse:
        async def lines() -> AsyncIterator[str]:
            async for chunk in answer(ui.model_messages(body.messages)):
                for line in data_stream_lines(chunk):
                    yield line

        return StreamingResponse(lines(), media_type=PLAIN_TEXT, headers={DATA_STREAM_HEADER: "v1"})

    @app.post("/api/text-stream")
    async def text_stream(body: ui.ChatRequest) -> StreamingResponse:
        async def pieces() -> AsyncIterator[str]:
            async for chunk in answer(ui.model_messages(body.messages)):
                if text := plain_text(chunk):
                    yield text

        return StreamingResponse(pieces(), media_type=PLAIN_TEXT)

    @app.post("/api/token-events")
    async def token_events(body: ui.ChatRequest) -> EventSourceResponse:
        async def events() -> AsyncIterator[dict[str, str]]:
            async for chunk in answer(ui.model_messages(body.messages)):
                if event := token_event(chunk):
                    yield event

        return EventSourceResponse(events(), sep="\n")

    return app
