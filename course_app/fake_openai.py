"""An offline, deterministic OpenAI-compatible server for the LLM lessons.

It speaks the real wire formats, so the official ``openai`` SDK talks to it over HTTP:

- ``POST /v1/chat/completions``: ``chat.completion`` or, with ``stream: true``,
  ``data: {chat.completion.chunk}`` frames (role first, content deltas, a chunk with
  ``finish_reason``, a usage chunk with ``choices: []`` when
  ``stream_options.include_usage`` is set) and ``data: [DONE]``.
- ``POST /v1/responses``: a Response or, streamed, ``event: response.created`` ...
  ``response.output_text.delta`` ... ``response.completed`` with ``sequence_number``
  (``response.incomplete``, status ``incomplete``, when ``max_output_tokens`` cuts it).
- ``GET /v1/models``.

Requests are checked like the API checks them, with its error shape
(``{"error": {"message", "type", "param", "code"}}``): a parameter the API does not know is
a 400, ``stream_options`` without ``stream: true`` is a 400, ``param`` names the failing
field (``messages[0].role``), and an unknown path is a 404.

Replies are scripted from the last user message, so the same prompt always streams the
same tokens: the first after 0.1 s, then one every 0.05 s, scaled by the course pace.

Faults, chosen per request with the ``X-Fake-Fault`` header or a model suffix
(``course-mini@rate-limit``): ``latency`` (slow first token), ``error-midstream`` (an error
frame after a few tokens), ``rate-limit`` (429 with ``retry-after``), ``server-error`` (500),
``drop`` (the connection is cut mid-stream).

``app.state.streams`` counts started, finished and cancelled streams: a relay that stops
the upstream when its own client leaves shows up there as ``cancelled``.

    server = serve(create_app(), name="fake-openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="course")
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from course_app import pace

MODELS = ("course-mini",)
FAULTS = ("latency", "error-midstream", "rate-limit", "server-error", "drop")
CREATED = 1_767_225_600  # a fixed timestamp: identical requests give identical bytes
ERROR_AFTER_TOKENS = 3

logger = logging.getLogger("lesson.fake_openai")


# -- requests -------------------------------------------------------------------------------


def _parameters(params: type) -> frozenset[str]:
    return frozenset(params.__required_keys__ | params.__optional_keys__) | {"stream"}


# The top-level parameters the API knows, as the installed SDK sends them. Anything else is
# a 400, as on the real API (an ``extra_body`` typo does not pass silently). Known
# parameters the fake does not model (temperature, tools, ...) are accepted and ignored.
CHAT_PARAMETERS = _parameters(CompletionCreateParamsBase)
RESPONSES_PARAMETERS = _parameters(ResponseCreateParamsBase)


def _text_or_parts(value: Any) -> Any:
    """Content and input are a string or an array of parts (objects); null is checked later."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        return value
    raise PydanticCustomError("content_type", "expected a string or an array of objects")


class _Checked(BaseModel):
    # strict: `"stream": "yes"` or `"max_tokens": "5"` is a 400, not quietly converted.
    model_config = ConfigDict(strict=True, extra="ignore")


class ChatMessage(BaseModel):
    # Message fields the fake does not model (name, tool_calls, ...) are kept, not checked.
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Any = None  # required, see _missing_content; a string or parts

    _content = field_validator("content")(_text_or_parts)


class StreamOptions(_Checked):
    include_usage: bool = False


class ChatRequest(_Checked):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class ResponsesRequest(_Checked):
    model: str
    input: Any  # a string or an array of input items
    instructions: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)

    _input = field_validator("input")(_text_or_parts)


# -- the "model" ----------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Word-sized tokens that keep their leading space: ``"a b" -> ["a", " b"]``."""
    return re.findall(r"\s*\S+", text)


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(part.get("text", "")) for part in content)


def reply_to(prompt: str) -> str:
    """The scripted reply for a prompt: deterministic, and long enough to watch stream."""
    cleaned = prompt.strip()
    lowered = cleaned.lower().rstrip("!.?")
    if lowered in {"hello", "hi", "hey"}:
        return (
            "Hello! I am the course's fake model. I run on your machine, need no API key, "
            "and always give the same answer to the same prompt."
        )
    if match := re.fullmatch(r"count to (\d{1,3})", lowered):
        n = max(1, min(int(match.group(1)), 500))
        return ", ".join(str(i) for i in range(1, n + 1)) + "."
    return (
        f"You said: {cleaned} I am a fake model, so I answer by repeating it, one token at "
        "a time, to show how streaming works."
    )


@dataclass
class StreamStats:
    """What the fake server has seen, for lessons and tests to assert on."""

    started: int = 0
    finished: int = 0
    failed: int = 0  # an injected fault ended it
    cancelled: int = 0  # the client left before the end

    @property
    def open(self) -> int:
        return self.started - self.finished - self.failed - self.cancelled


class _Dropped(Exception):
    """Raised inside a stream to make uvicorn cut the connection mid-body."""


class _MidstreamError(Exception):
    """The 'error-midstream' fault: the caller turns it into the API's error frame."""


MIDSTREAM_MESSAGE = "The fake model failed mid-stream (fault 'error-midstream')."


@dataclass(frozen=True)
class _Plan:
    model: str
    fault: str | None
    prompt_tokens: int
    tokens: list[str]
    finish_reason: str
    ident: str
    echo: tuple[tuple[str, Any], ...] = ()  # request fields a Response object repeats


def _error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _param_path(loc: tuple[int | str, ...]) -> str | None:
    """Pydantic's ``("messages", 0, "role")`` as the API writes it: ``messages[0].role``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path or None


def _missing(param: str) -> JSONResponse:
    return _error(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    param = _param_path(first["loc"])
    if first["type"] == "missing" and param is not None:
        return _missing(param)
    if first["type"].endswith("_type"):  # bool_type, int_type, content_type, ...
        return _error(
            400, f"Invalid type for '{param}': {first['msg']}.", param=param, code="invalid_type"
        )
    return _error(
        400, f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_value"
    )


def _unknown_parameters(body: dict[str, Any], known: frozenset[str]) -> list[str]:
    return sorted(set(body) - known)


def _stream_options_without_stream(req: ChatRequest | ResponsesRequest) -> JSONResponse | None:
    if req.stream_options is not None and not req.stream:
        return _error(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    return None


def _missing_content(chat: ChatRequest) -> JSONResponse | None:
    """Every message needs content, except an assistant message that calls tools."""
    for index, message in enumerate(chat.messages):
        extra = message.model_extra or {}
        if message.content is not None or (
            message.role == "assistant" and (extra.get("tool_calls") or extra.get("function_call"))
        ):
            continue
        param = f"messages[{index}].content"
        if "content" not in message.model_fields_set:
            return _missing(param)
        return _error(
            400,
            f"Invalid type for '{param}': expected a string or an array of objects, got null.",
            param=param,
            code="invalid_type",
        )
    return None


def _split_model(model: str, header_fault: str | None) -> tuple[str, str | None] | JSONResponse:
    base, _, suffix = model.partition("@")
    fault = header_fault or suffix or None
    if base not in MODELS:
        return _error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if fault is not None and fault not in FAULTS:
        return _error(
            400, f"Unknown fault {fault!r}; use one of: {', '.join(FAULTS)}.", param="model"
        )
    return base, fault


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    if request.headers.get("authorization", "").removeprefix("Bearer ").strip() == "":
        return _error(
            401,
            "You didn't provide an API key. Any key works with the course's fake server.",
            code="missing_api_key",
        )
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "We could not parse the JSON body of your request.", code="invalid_json")
    if not isinstance(body, dict):
        return _error(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _plan(
    request_body: BaseModel,
    model: str,
    fault: str | None,
    prompt: str,
    context: str,
    limit: int | None,
    echo: dict[str, Any] | None = None,
) -> _Plan:
    tokens = tokenize(reply_to(prompt))
    finish_reason = "stop"
    if limit is not None and len(tokens) > limit:
        tokens, finish_reason = tokens[:limit], "length"
    digest = hashlib.sha256(request_body.model_dump_json().encode()).hexdigest()[:24]
    echoed = tuple((echo or {}).items())
    return _Plan(model, fault, len(tokenize(context)), tokens, finish_reason, digest, echoed)


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


async def _paced_tokens(plan: _Plan, stats: StreamStats) -> AsyncIterator[tuple[int, str]]:
    """Yield (index, token) at the model's pace, injecting faults; count the outcome."""
    stats.started += 1
    outcome = "cancelled"
    try:
        await pace.sleep(2.0 if plan.fault == "latency" else 0.1)
        for index, token in enumerate(plan.tokens):
            if index == ERROR_AFTER_TOKENS and plan.fault == "drop":
                outcome = "failed"
                raise _Dropped(f"fault 'drop': cutting {plan.ident} after {index} tokens")
            if index == ERROR_AFTER_TOKENS and plan.fault == "error-midstream":
                outcome = "failed"
                raise _MidstreamError(MIDSTREAM_MESSAGE)
            yield index, token
            await pace.sleep(0.05)
        outcome = "finished"
    finally:
        if outcome == "cancelled":  # log first: a reader that sees the count sees the line
            logger.info("stream %s cancelled: the client left after the stream started", plan.ident)
        setattr(stats, outcome, getattr(stats, outcome) + 1)


def _usage_chat(plan: _Plan) -> dict[str, int]:
    completion = len(plan.tokens)
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }


async def _chat_stream(
    plan: _Plan, include_usage: bool, stats: StreamStats
) -> AsyncIterator[bytes]:
    base = {
        "id": f"chatcmpl-{plan.ident}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": plan.model,
        "system_fingerprint": "fp_course",
    }
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**base, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    try:
        async for _, token in _paced_tokens(plan, stats):
            yield chunk({"content": token})
    except _MidstreamError as exc:
        error = {"message": str(exc), "type": "server_error", "param": None, "code": "fake_fault"}
        yield _sse({"error": error})
        return
    yield chunk({}, plan.finish_reason)
    if include_usage:
        yield _sse({**base, "choices": [], "usage": _usage_chat(plan)})
    yield _sse("[DONE]")


def _final_status(plan: _Plan) -> str:
    """``incomplete`` when ``max_output_tokens`` cut the answer, else ``completed``."""
    return "incomplete" if plan.finish_reason == "length" else "completed"


def _response_object(plan: _Plan, status: str, text: str | None) -> dict[str, Any]:
    output = []
    if text is not None:
        output = [_message_item(plan, status, text)]
    finished = status in {"completed", "incomplete"}
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    echo = dict(plan.echo)
    return {
        "id": f"resp_{plan.ident}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "metadata": {},
        "usage": {
            "input_tokens": plan.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(plan.tokens),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": plan.prompt_tokens + len(plan.tokens),
        }
        if finished
        else None,
    }


def _message_item(plan: _Plan, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "id": f"msg_{plan.ident}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


async def _responses_stream(plan: _Plan, stats: StreamStats) -> AsyncIterator[bytes]:
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return _sse(data, event=kind)

    item_id = f"msg_{plan.ident}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=_response_object(plan, "in_progress", None))
    yield event("response.in_progress", response=_response_object(plan, "in_progress", None))
    yield event(
        "response.output_item.added", output_index=0, item=_message_item(plan, "in_progress", None)
    )
    yield event(
        "response.content_part.added",
        **where,
        part={"type": "output_text", "text": "", "annotations": []},
    )
    text = ""
    try:
        async for _, token in _paced_tokens(plan, stats):
            text += token
            yield event("response.output_text.delta", **where, delta=token, logprobs=[])
    except _MidstreamError as exc:
        yield event("error", code="server_error", message=str(exc), param=None)
        return
    status = _final_status(plan)  # the item and the response end the same way
    yield event("response.output_text.done", **where, text=text, logprobs=[])
    yield event(
        "response.content_part.done",
        **where,
        part={"type": "output_text", "text": text, "annotations": []},
    )
    yield event("response.output_item.done", output_index=0, item=_message_item(plan, status, text))
    yield event(f"response.{status}", response=_response_object(plan, status, text))


def _early_fault(fault: str | None) -> JSONResponse | None:
    if fault == "rate-limit":
        return _error(
            429,
            "Rate limit reached for course-mini (fault 'rate-limit'). Please try again in 1s.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": "1"},
        )
    if fault == "server-error":
        return _error(
            500, "The fake server had an error (fault 'server-error').", type="server_error"
        )
    return None


def _streaming(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _collect(plan: _Plan, stats: StreamStats) -> str | None:
    """Run the non-streaming form at the same pace; None when the fault cuts it short."""
    try:
        return "".join([token async for _, token in _paced_tokens(plan, stats)])
    except _MidstreamError:
        return None


def create_app() -> FastAPI:
    """The fake OpenAI API as a FastAPI app; serve it with :func:`course_app.serve`."""
    app = FastAPI(
        title="Fake OpenAI-compatible API (course_app)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.streams = StreamStats()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 404/405 are {"detail": ...}: answer in the API's error shape instead.
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        return _error(exc.status_code, message, headers=exc.headers)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "course"} for m in MODELS
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if unknown := _unknown_parameters(body, CHAT_PARAMETERS):
            plural = "s" if len(unknown) > 1 else ""
            return _error(
                400, f"Unrecognized request argument{plural} supplied: {', '.join(unknown)}"
            )
        try:
            chat = ChatRequest.model_validate(body)
        except ValidationError as exc:
            return _validation_error(exc)
        if problem := _stream_options_without_stream(chat) or _missing_content(chat):
            return problem
        split = _split_model(chat.model, request.headers.get("x-fake-fault"))
        if isinstance(split, JSONResponse):
            return split
        model, fault = split
        if early := _early_fault(fault):
            return early
        users = [m for m in chat.messages if m.role == "user"]
        prompt = _text_of(users[-1].content) if users else ""
        context = " ".join(_text_of(m.content) for m in chat.messages)
        limit = chat.max_completion_tokens or chat.max_tokens
        plan = _plan(chat, model, fault, prompt, context, limit)
        stats: StreamStats = app.state.streams
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return _streaming(_chat_stream(plan, include_usage, stats))
        text = await _collect(plan, stats)
        if text is None:
            return _error(
                500, "The fake model failed (fault 'error-midstream').", type="server_error"
            )
        message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": plan.finish_reason,
        }
        return JSONResponse(
            {
                "id": f"chatcmpl-{plan.ident}",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_course",
                "choices": [choice],
                "usage": _usage_chat(plan),
            }
        )

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if unknown := _unknown_parameters(body, RESPONSES_PARAMETERS):
            return _error(
                400,
                f"Unknown parameter: '{unknown[0]}'.",
                param=unknown[0],
                code="unknown_parameter",
            )
        try:
            req = ResponsesRequest.model_validate(body)
        except ValidationError as exc:
            return _validation_error(exc)
        if problem := _stream_options_without_stream(req):
            return problem
        if req.input is None:
            return _missing("input")
        split = _split_model(req.model, request.headers.get("x-fake-fault"))
        if isinstance(split, JSONResponse):
            return split
        model, fault = split
        if early := _early_fault(fault):
            return early
        if isinstance(req.input, str):
            prompt = context = req.input
        else:
            users = [item for item in req.input if item.get("role") == "user"]
            prompt = _text_of(users[-1].get("content")) if users else ""
            context = " ".join(_text_of(item.get("content")) for item in req.input)
        context = f"{req.instructions or ''} {context}"
        echo = {"instructions": req.instructions, "max_output_tokens": req.max_output_tokens}
        plan = _plan(req, model, fault, prompt, context, req.max_output_tokens, echo)
        stats: StreamStats = app.state.streams
        if req.stream:
            return _streaming(_responses_stream(plan, stats))
        text = await _collect(plan, stats)
        if text is None:
            return _error(
                500, "The fake model failed (fault 'error-midstream').", type="server_error"
            )
        return JSONResponse(_response_object(plan, _final_status(plan), text))

    return app
