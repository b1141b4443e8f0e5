"""The Vercel AI SDK's *UI message stream* protocol (npm ``ai`` 6.x), spoken from FastAPI.

A frontend built on the AI SDK (``useChat``, ``DefaultChatTransport``) sends its chat as
JSON and reads the answer as Server-Sent Events: one JSON object, a *chunk*, per ``data:``
line, the response marked with the header ``x-vercel-ai-ui-message-stream: v1``, and the
stream ended by ``data: [DONE]``. The field names below are the ones the ``ai`` package
itself validates (``uiMessageChunkSchema`` in ``ai/dist/index.mjs``); an answer in text is::

    data: {"type":"start","messageId":"msg_1f3a"}
    data: {"type":"text-start","id":"text-1"}
    data: {"type":"text-delta","id":"text-1","delta":"Hello"}
    data: {"type":"text-delta","id":"text-1","delta":" world"}
    data: {"type":"text-end","id":"text-1"}
    data: {"type":"finish","finishReason":"stop"}
    data: [DONE]

(each followed by a blank line). The end is one of three chunks: ``finish``, ``error``
(``errorText``: shown to the user, so write it for them) or ``abort`` (the answer was
stopped). A text part must be started before its deltas and is ended by ``text-end``:
:class:`OpenParts` remembers which are open, so that an answer cut short can still close
them. Event names and ``id:`` lines are allowed (the SDK reads only ``data``); comments
(``: ping``) are ignored by the SDK's parser, so heartbeats are safe.

The request side: :class:`ChatRequest` is what ``DefaultChatTransport`` POSTs
(``{id, messages, trigger, messageId}``, messages made of *parts*), and
:func:`model_messages` turns its history into the ``{"role", "content"}`` list an
OpenAI-compatible API takes. :func:`assemble` reads chunks back into one message, as the
SDK's ``readUIMessageStream`` does, for Python clients and tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

HEADER = "x-vercel-ai-ui-message-stream"
# What the SDK's own servers send besides the SSE content type (UI_MESSAGE_STREAM_HEADERS):
# the protocol version, no caching, and no buffering in nginx.
HEADERS = {HEADER: "v1", "cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = "[DONE]"  # the last data line; not JSON, not a chunk

Chunk = dict[str, Any]
FinishReason = Literal["stop", "length", "content-filter", "tool-calls", "error", "other"]
TERMINAL = frozenset({"finish", "error", "abort"})  # exactly one of these ends an answer

MAX_CHAT_ID = 100
MAX_MESSAGES = 200
MAX_PARTS = 100
MAX_TEXT = 20_000  # characters in one part


# -- chunks -----------------------------------------------------------------------------------


def start(message_id: str) -> Chunk:
    """The first chunk: the assistant message's id (the client keeps it for this message)."""
    return {"type": "start", "messageId": message_id}


def text_start(part_id: str) -> Chunk:
    return {"type": "text-start", "id": part_id}


def text_delta(part_id: str, delta: str) -> Chunk:
    return {"type": "text-delta", "id": part_id, "delta": delta}


def text_end(part_id: str) -> Chunk:
    return {"type": "text-end", "id": part_id}


def finish(reason: FinishReason | None = None) -> Chunk:
    """The answer is complete; ``reason`` as the SDK names them ("stop", "length", ...)."""
    return {"type": "finish"} if reason is None else {"type": "finish", "finishReason": reason}


def error(text: str) -> Chunk:
    """The answer failed; ``text`` is shown to the user: never an exception's own text."""
    return {"type": "error", "errorText": text}


def abort(reason: str | None = None) -> Chunk:
    """The answer was stopped before its end (what the SDK's servers send after a stop)."""
    return {"type": "abort"} if reason is None else {"type": "abort", "reason": reason}


def encode(chunk: Chunk) -> str:
    """A chunk as one line of compact JSON (``json.dumps`` escapes newlines in text)."""
    return json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)


def decode(data: str) -> Chunk | None:
    """One ``data:`` value as a chunk; None for ``[DONE]``. ValueError for anything else."""
    if data == DONE:
        return None
    chunk = json.loads(data)
    if not isinstance(chunk, dict) or not isinstance(chunk.get("type"), str):
        raise ValueError(f"not a UI message chunk: {data[:80]!r}")
    return chunk


class OpenParts:
    """The text parts a stream has started and not ended yet.

    Feed it every chunk you send (``track`` returns the chunk); ``end_all()`` gives the
    ``text-end`` chunks that close what is still open, for an answer stopped or failed
    halfway through a part.
    """

    def __init__(self) -> None:
        self._open: list[str] = []

    def track(self, chunk: Chunk) -> Chunk:
        if chunk["type"] == "text-start":
            self._open.append(chunk["id"])
        elif chunk["type"] == "text-end" and chunk["id"] in self._open:
            self._open.remove(chunk["id"])
        return chunk

    def end_all(self) -> list[Chunk]:
        ends, self._open = [text_end(part_id) for part_id in self._open], []
        return ends


# -- reading an answer back (what readUIMessageStream does in JavaScript) ---------------------


class ProtocolError(ValueError):
    """Chunks in an order the SDK rejects (a delta for a text part that was never started)."""


@dataclass
class AssembledMessage:
    """One assistant message, put together from its chunks."""

    id: str | None = None
    text: str = ""
    ending: str | None = None  # "finish", "error" or "abort": None while unfinished
    finish_reason: str | None = None
    error: str | None = None
    chunks: list[Chunk] = field(default_factory=list)


def assemble(chunks: Iterable[Chunk]) -> AssembledMessage:
    """Apply chunks in order, checking them as the SDK does; later text parts are appended."""
    message = AssembledMessage()
    texts: dict[str, str] = {}
    for chunk in chunks:
        kind = chunk["type"]
        message.chunks.append(chunk)
        if kind == "start":
            message.id = chunk.get("messageId", message.id)
        elif kind == "text-start":
            texts[chunk["id"]] = ""
        elif kind in ("text-delta", "text-end"):
            if chunk["id"] not in texts:
                raise ProtocolError(f"{kind} for text part {chunk['id']!r}, which was not started")
            if kind == "text-delta":
                texts[chunk["id"]] += chunk["delta"]
                message.text += chunk["delta"]
            else:
                del texts[chunk["id"]]
        elif kind in TERMINAL:
            message.ending = kind
            message.finish_reason = chunk.get("finishReason")
            message.error = chunk.get("errorText")
    return message


# -- the request DefaultChatTransport sends -----------------------------------------------------


class UIPart(BaseModel):
    """One part of a message. Text parts are read; other kinds (files, tools...) are kept
    but not sent to the model."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, Field(min_length=1, max_length=100)]
    text: Annotated[str, Field(max_length=MAX_TEXT)] | None = None

    @model_validator(mode="after")
    def _text_parts_have_text(self) -> UIPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs its text")
        return self


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # metadata

    id: Annotated[str, Field(max_length=200)]
    role: Literal["system", "user", "assistant"]
    parts: Annotated[list[UIPart], Field(max_length=MAX_PARTS)]

    @property
    def text(self) -> str:
        return "".join(part.text or "" for part in self.parts if part.type == "text")


class ChatRequest(BaseModel):
    """``{id, messages, trigger, messageId}``: the chat id and its whole history, newest last."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=MAX_CHAT_ID)]
    messages: Annotated[list[UIMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None  # the SDK's field name, camelCase

    @model_validator(mode="after")
    def _ends_with_the_user(self) -> ChatRequest:
        last = self.messages[-1]
        if last.role != "user":
            raise ValueError("the last message must be the user's: it is the one to answer")
        # model_messages() sends text only: a message of files alone would reach the model as
        # nothing, and fail there after the first byte. Refuse it now, with a 422.
        if not last.text.strip():
            raise ValueError("the last message has no text: only text parts reach the model")
        return self


def model_messages(messages: Iterable[UIMessage]) -> list[dict[str, str]]:
    """The history as an OpenAI-compatible API takes it: text only, empty messages left out.

    ``system`` messages from the client are dropped: the history comes from the browser,
    which must not be able to rewrite the server's instructions (set those on the server).
    """
    return [
        {"role": message.role, "content": message.text}
        for message in messages
        if message.role != "system" and message.text
    ]
