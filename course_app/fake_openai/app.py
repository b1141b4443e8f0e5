"""An offline, deterministic OpenAI-compatible server for the LLM lessons.

It speaks the real wire formats, so the official ``openai`` SDK talks to it over HTTP:
``POST /v1/chat/completions``, ``POST /v1/responses`` (both streamed or not) and
``GET /v1/models``. One concern per module:

- :mod:`course_app.fake_openai.requests`: what a request may hold; the API's error shape;
- :mod:`course_app.fake_openai.script`: the scripted answers ("hello", "count to N",
  "count forever", anything else is echoed), their pace, and :class:`StreamStats`;
- :mod:`course_app.fake_openai.tools`: when the answer calls tools instead (the prompt
  names one), and the answer to tool results;
- :mod:`course_app.fake_openai.faults`: faults on request (429, 500, slow, an error frame,
  malformed JSON, a body that ends early, a dropped connection, a stream that stalls);
- :mod:`course_app.fake_openai.chat` and :mod:`course_app.fake_openai.responses`: the two
  wire formats.

``app.state.streams`` counts started, finished, failed and cancelled streams: a relay that
stops the upstream when its own client leaves shows up there as ``cancelled``.

    server = serve(create_app(), name="fake-openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="course")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from course_app.fake_openai.chat import chat_chunks, chat_completion
from course_app.fake_openai.faults import FAULTS, early_fault, quiet_drops
from course_app.fake_openai.requests import (
    ChatRequest,
    ResponsesRequest,
    api_error,
    json_body,
    parse_chat,
    parse_responses,
    refusal,
    tool_choice,
)
from course_app.fake_openai.responses import final_status, response_events, response_object
from course_app.fake_openai.script import (
    CREATED,
    MODELS,
    Plan,
    StreamStats,
    collect,
    event_stream,
    make_plan,
    reply_to,
    text_of,
    tokenize,
)
from course_app.fake_openai.tools import ToolRequest, answer_to_results
from course_app.streams import BodyRefused, guard_requests

__all__ = ["FAULTS", "MODELS", "StreamStats", "create_app", "reply_to", "tokenize"]

MAX_BODY = 4 * 1024 * 1024  # bytes: room for the longest chat lesson 10 or 13 forwards


def _split_model(model: str, header_fault: str | None) -> tuple[str, str | None] | JSONResponse:
    """``course-mini@drop`` -> ``("course-mini", "drop")``; the header wins over the suffix."""
    base, _, suffix = model.partition("@")
    fault = header_fault or suffix or None
    if base not in MODELS:
        return api_error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if fault is not None and fault not in FAULTS:
        return api_error(
            400, f"Unknown fault {fault!r}; use one of: {', '.join(FAULTS)}.", param="model"
        )
    return base, fault


def _unfinished(plan: Plan) -> JSONResponse:
    if plan.endless:
        return api_error(
            400,
            "'count forever' never ends: stream it (stream=true) or set a token limit.",
            code="endless_answer",
        )
    return api_error(500, f"The fake model failed (fault '{plan.fault}').", type="server_error")


def _tools(req: ChatRequest | ResponsesRequest, last_is_user: bool) -> ToolRequest | None:
    """The tools the model may call now: only in answer to a user's message."""
    if not req.tools or not last_is_user:
        return None
    choice = tool_choice(req)
    assert not isinstance(choice, JSONResponse)  # parse_chat / parse_responses checked it
    return ToolRequest(tuple(req.tool_names()), choice, req.parallel_tool_calls is not False)


def _trailing(items: list[Any], is_result: Any, content: Any) -> list[str]:
    """The contents of the tool results at the end of the history (newest last)."""
    results: list[str] = []
    for item in reversed(items):
        if not is_result(item):
            break
        results.insert(0, text_of(content(item)))
    return results


async def _accept(
    request: Request, parse: Callable[[Any], Any]
) -> tuple[Any, str, str | None] | JSONResponse:
    """The request parsed by ``parse``, its model and fault; or the error to answer with.

    Both APIs refuse the same way: a body that is not JSON, a request that does not validate,
    an unknown model, then a fault that strikes before the first byte.
    """
    body = await json_body(request)
    parsed = body if isinstance(body, JSONResponse) else parse(body)
    if isinstance(parsed, JSONResponse):
        return parsed
    split = _split_model(parsed.model, request.headers.get("x-fake-fault"))
    if isinstance(split, JSONResponse):
        return split
    model, fault = split
    if early := early_fault(fault):
        return early
    return parsed, model, fault


def create_app() -> FastAPI:
    """The fake OpenAI API as a FastAPI app; serve it with :func:`course_app.serve`."""
    quiet_drops()
    app = FastAPI(
        title="Fake OpenAI-compatible API (course_app)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.streams = StreamStats()
    # The API's limits: 413 for a body too large, 400 for one that is not JSON, its shape.
    guard_requests(app, max_body=MAX_BODY, bad_json_status=400, answer=refusal)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 404/405 are {"detail": ...}: answer in the API's error shape instead.
        if isinstance(exc, BodyRefused):
            return refusal(exc)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        return api_error(exc.status_code, message, headers=exc.headers)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "course"} for m in MODELS
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        accepted = await _accept(request, parse_chat)
        if isinstance(accepted, JSONResponse):
            return accepted
        chat, model, fault = accepted
        users = [m for m in chat.messages if m.role == "user"]
        prompt = text_of(users[-1].content) if users else ""
        context = " ".join(text_of(m.content) for m in chat.messages)
        limit = chat.max_completion_tokens or chat.max_tokens
        last_role = chat.messages[-1].role
        results = _trailing(chat.messages, lambda m: m.role == "tool", lambda m: m.content)
        plan = make_plan(
            chat,
            model,
            fault,
            prompt,
            context,
            limit,
            tools=_tools(chat, last_role == "user"),
            reply=answer_to_results(results) if results and chat.tools else None,
        )
        stats: StreamStats = app.state.streams
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return event_stream(chat_chunks(plan, include_usage, stats))
        text = None if plan.endless else await collect(plan, stats)
        if text is None:
            return _unfinished(plan)
        return JSONResponse(chat_completion(plan, text))

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        accepted = await _accept(request, parse_responses)
        if isinstance(accepted, JSONResponse):
            return accepted
        req, model, fault = accepted
        results: list[str] = []
        if isinstance(req.input, str):
            prompt = context = req.input
            last_is_user = True
        else:
            users = [item for item in req.input if item.get("role") == "user"]
            prompt = text_of(users[-1].get("content")) if users else ""
            context = " ".join(text_of(item.get("content")) for item in req.input)
            last_is_user = bool(req.input) and req.input[-1].get("role") == "user"
            results = _trailing(
                req.input,
                lambda item: item.get("type") == "function_call_output",
                lambda item: item.get("output"),
            )
        context = f"{req.instructions or ''} {context}"
        echo: dict[str, Any] = {
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
        }
        if req.tools:
            echo["tools"] = [tool.model_dump() for tool in req.tools]
            echo["tool_choice"] = req.tool_choice
        plan = make_plan(
            req,
            model,
            fault,
            prompt,
            context,
            req.max_output_tokens,
            echo,
            tools=_tools(req, last_is_user),
            reply=answer_to_results(results) if results and req.tools else None,
        )
        stats: StreamStats = app.state.streams
        if req.stream:
            return event_stream(response_events(plan, stats))
        text = None if plan.endless else await collect(plan, stats)
        if text is None:
            return _unfinished(plan)
        return JSONResponse(response_object(plan, final_status(plan), text))

    return app
