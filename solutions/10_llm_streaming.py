"""Lesson 10: relay an LLM's tokens to the browser as Server-Sent Events.

`POST /chat/stream` takes a chat history, asks an OpenAI-compatible API for a streamed
answer and relays it as `token` events, then one `done` event with the token usage. An
upstream failure becomes one `error` event (a code and a safe message: no internals), and
when the browser leaves, the upstream request is closed so the model stops generating.
`GET /` is a chat page that uses it.

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

from course_app.fake_openai import FAULTS
from course_app.fake_openai import create_app as create_fake_llm
from course_app.llm_settings import LLMSettings, async_client, llm_settings
from course_app.pages import html_page
from course_app.server import LessonServer

logger = logging.getLogger("lesson.relay")


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=20_000)]


class ChatRequest(BaseModel):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=100)]
    # Only the fake server knows faults; the relay ignores this for a real provider.
    simulate: Literal[FAULTS] | None = None  # type: ignore[valid-type]


Event = dict[str, str]  # sse-starlette's event dict: {"event": ..., "data": ...}

# The only texts an error event carries, by code: safe to show to a user.
SAFE_MESSAGES = {
    "rate_limited": "The model is busy. Try again in a moment.",
    "upstream_unavailable": "Lost the connection to the model.",
    "upstream_error": "The model failed to answer.",
}


def sse_event(kind: str, payload: dict[str, Any]) -> Event:
    """An event whose data is JSON (sse-starlette sends data as text: encode it yourself)."""
    return {"event": kind, "data": json.dumps(payload)}


def error_event(code: str, message: str, *, retryable: bool) -> Event:
    """The one shape every error takes on the wire: safe to show to a user."""
    return sse_event("error", {"code": code, "message": message, "retryable": retryable})


async def relay_tokens(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, str]],
    extra_headers: dict[str, str] | None = None,
) -> AsyncIterator[Event]:
    """``token`` events, then ``done`` with usage; or one ``error`` event. See the module doc."""
    # TODO: start the upstream stream: client.chat.completions.create(model=..., messages=...,
    #       stream=True, stream_options={"include_usage": True}, extra_headers=extra_headers).
    # TODO: for every chunk: `chunk.choices` may be EMPTY (the last, usage-only chunk), so
    #       never index [0] blindly. Yield sse_event("token", {"text": ...}) for each
    #       non-empty delta.content; remember chunk.usage and the finish_reason.
    # TODO: close the upstream stream however the loop ends (`async with stream:`), also
    #       when this generator is closed at a yield (sse-starlette calls aclose() on it when
    #       a send fails or times out): closing the stream is what stops the model.
    # TODO: after a normal end yield sse_event("done", {"finish_reason": ...,
    #       "usage": {...} or None}).
    # TODO: turn upstream failures into ONE error_event(code, SAFE_MESSAGES[code], ...) and
    #       log the real exception with logger.warning(...); never put str(exc) in the event:
    #       openai.RateLimitError -> "rate_limited" (retryable), openai.APIConnectionError ->
    #       "upstream_unavailable" (retryable), any other openai.APIError -> "upstream_error"
    #       (retryable only if it is an APIStatusError with status >= 500).
    ### BEGIN SOLUTION
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=extra_headers,
        )
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage.model_dump(exclude_none=True)
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield sse_event("token", {"text": choice.delta.content})
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
    except openai.RateLimitError as exc:
        logger.warning("upstream rate limit: %s", exc)
        yield error_event("rate_limited", SAFE_MESSAGES["rate_limited"], retryable=True)
        return
    except openai.APIConnectionError as exc:
        logger.warning("upstream connection failed: %s", exc)
        yield error_event(
            "upstream_unavailable", SAFE_MESSAGES["upstream_unavailable"], retryable=True
        )
        return
    except openai.APIError as exc:
        logger.warning("upstream error: %s", exc)
        retryable = isinstance(exc, openai.APIStatusError) and exc.status_code >= 500
        yield error_event("upstream_error", SAFE_MESSAGES["upstream_error"], retryable=retryable)
        return
    yield sse_event("done", {"finish_reason": finish_reason, "usage": usage})
    ### END SOLUTION


def create_app(settings: LLMSettings | None = None) -> FastAPI:
    """The relay and its chat page; with no settings, it starts the fake LLM server itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        fake: LessonServer | None = None
        chosen = settings
        if chosen is None:
            try:
                chosen = llm_settings()  # OPENAI_BASE_URL and friends, if set
            except LookupError:
                fake = LessonServer(create_fake_llm(), name="10-llm").start()
                chosen = llm_settings(fake.url)
        app.state.settings = chosen
        app.state.llm = async_client(chosen)
        try:
            yield
        finally:
            await app.state.llm.close()
            if fake is not None:
                fake.stop()

    app = FastAPI(title="Lesson 10: LLM streaming relay", lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return html_page("10_chat.html")

    # sse-starlette, not fastapi.sse, for send_timeout: a client that stops reading is
    # dropped, and sse-starlette then closes relay_tokens() with aclose(), which closes the
    # upstream request through its `async with stream:` (native SSE has no such option).
    # When the client leaves, sse-starlette cancels or closes the generator at once;
    # fastapi.sse can leave it paused at a yield until GC (lesson 05, RequestCleanup).
    @app.post("/chat/stream")
    async def chat_stream(body: ChatRequest) -> EventSourceResponse:
        # The body is validated before the first byte: bad input is a 422, not a stream.
        chosen: LLMSettings = app.state.settings
        headers = {"x-fake-fault": body.simulate} if body.simulate and chosen.is_fake else None
        messages = [m.model_dump() for m in body.messages]
        events = relay_tokens(app.state.llm, chosen.model, messages, headers)
        return EventSourceResponse(events, ping=15, send_timeout=30)

    return app


app = create_app()
