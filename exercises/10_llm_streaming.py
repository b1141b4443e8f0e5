"""Lesson 10: relay a model's answer to the browser as Server-Sent Events.

`POST /chat/stream` takes a chat history and asks an OpenAI-compatible API for a streamed
answer through the **Responses API** (`client.responses.create(..., stream=True)`; the
notebook relays Chat Completions). It relays the answer as `token` events, then exactly
one terminal event: `done` with the status and the token usage, or `error` (a code, a safe
message and whether retrying makes sense: no internals). When the browser leaves, the
upstream request is closed so the model stops generating. `GET /` is a chat page that
uses it.

Check your work: `course check 10` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 10` (it starts the course's fake LLM server too), then open
http://127.0.0.1:8000/ or
`curl -N -X POST http://127.0.0.1:8000/chat/stream -H 'content-type: application/json'
-d '{"messages": [{"role": "user", "content": "count to 20"}]}'`
"""

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import openai
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from course_app.fake_openai import FAULTS, LLMSettings, open_llm
from course_app.runtime import html_page
from course_app.streams import guard_requests

logger = logging.getLogger("lesson.relay")


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=20_000)]


class ChatRequest(BaseModel):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=100)]
    max_tokens: Annotated[int | None, Field(ge=1, le=4096)] = None  # cuts the answer short
    # Only the fake server knows faults; the relay ignores this for a real provider.
    simulate: Literal[FAULTS] | None = None  # type: ignore[valid-type]


Event = dict[str, str]  # sse-starlette's event dict: {"event": ..., "data": ...}

# The only texts an error event carries, by code: safe to show to a user.
SAFE_MESSAGES = {
    "rate_limited": "The model is busy. Try again in a moment.",
    "upstream_unavailable": "Lost the connection to the model.",
    "upstream_error": "The model failed to answer.",
    "internal": "Something went wrong on the server.",
}


def sse_event(kind: str, payload: dict[str, Any]) -> Event:
    """An event whose data is JSON (sse-starlette sends data as text: encode it yourself)."""
    return {"event": kind, "data": json.dumps(payload)}


def error_event(code: str, message: str, *, retryable: bool) -> Event:
    """The one shape every error takes on the wire: safe to show to a user."""
    return sse_event("error", {"code": code, "message": message, "retryable": retryable})


async def relay_response(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, str]],
    *,
    max_output_tokens: int | None = None,
    extra_headers: dict[str, str] | None = None,
) -> AsyncIterator[Event]:
    """``token`` events, then exactly one ``done`` or ``error`` event. See the module doc."""

    # The notebook relays Chat Completions; this relays the Responses API, whose stream is
    # different: named events (event.type), no [DONE], and failures that arrive as events.
    # TODO: start the stream: `await client.responses.create(model=..., input=messages,
    #       stream=True, max_output_tokens=..., extra_headers=...)`, and close it however
    #       this generator ends (`async with stream:`), also when it is closed at a yield:
    #       closing the stream is what stops the model.
    # TODO: relay each "response.output_text.delta" event as sse_event("token", {"text": ...}).
    # TODO: the stream ends with ONE terminal event; relay it as ONE event, and ignore
    #       anything after it (read on to the stream's end rather than `break`: the SDK then
    #       finishes its own iterators; a `break` leaves them for the garbage collector):
    #       "response.completed" / "response.incomplete" -> sse_event("done", {"status":
    #       event.response.status, "usage": {"input_tokens": ..., "output_tokens": ...}});
    #       "error" / "response.failed" (the SDK does not raise for these) -> log it, then
    #       error_event("upstream_error", ..., retryable=False).
    # TODO: no terminal event before the stream ended? The answer was cut off: that is an
    #       "upstream_unavailable" error (retryable), not a done.
    # TODO: exceptions become one error event, with SAFE_MESSAGES[code] as its message; the
    #       details go to the log, never into the event:
    #       openai.RateLimitError -> "rate_limited", openai.APIConnectionError ->
    #       "upstream_unavailable" (both retryable), any other openai.APIError ->
    #       "upstream_error" (retryable if it is an APIStatusError with status >= 500), and
    #       any other Exception (a bug, a malformed chunk) -> "internal", not retryable,
    #       logged with logger.exception(...).
    raise NotImplementedError("TODO: write relay_response()")
    yield  # keeps this a generator; replace both lines


def create_app(settings: LLMSettings | None = None) -> FastAPI:
    """The relay and its chat page; with no settings, it starts the fake LLM server itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the app's life: these settings, else OPENAI_BASE_URL and friends,
        # else the course's fake server, started here and stopped when the app stops.
        async with open_llm(settings, name="10-llm") as llm:
            app.state.settings, app.state.llm = llm.settings, llm.client
            yield

    app = FastAPI(title="Lesson 10: LLM streaming relay", lifespan=lifespan)
    guard_requests(app)  # a body too large, or not JSON, is a 413/422, never a 500

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return html_page("10_chat.html")

    # sse-starlette, not fastapi.sse, for send_timeout: a client that stops reading is
    # dropped, and sse-starlette then closes relay_response() with aclose(), which closes
    # the upstream request through its `async with stream:` (native SSE has no such option).
    # When the client leaves, sse-starlette cancels or closes the generator at once;
    # fastapi.sse can leave it paused at a yield until GC (lesson 05, RequestCleanup).
    @app.post("/chat/stream")
    async def chat_stream(body: ChatRequest) -> EventSourceResponse:
        # The body is validated before the first byte: bad input is a 422, not a stream.
        chosen: LLMSettings = app.state.settings
        headers = {"x-fake-fault": body.simulate} if body.simulate and chosen.is_fake else None
        messages = [m.model_dump() for m in body.messages]
        events = relay_response(
            app.state.llm,
            chosen.model,
            messages,
            max_output_tokens=body.max_tokens,
            extra_headers=headers,
        )
        return EventSourceResponse(events, ping=15, send_timeout=30)

    return app


app = create_app()
