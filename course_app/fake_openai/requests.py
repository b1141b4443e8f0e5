"""What the fake OpenAI server accepts, and how it refuses the rest (the API's error shape).

Requests are checked like the API checks them, with its error body
``{"error": {"message", "type", "param", "code"}}``: a parameter the API does not know is a
400, ``stream_options`` without ``stream: true`` is a 400, ``param`` names the failing field
(``messages[0].role``), and a missing API key is a 401.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from course_app.streams import BodyRefused, read_json


def api_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in the API's shape."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def refusal(refused: BodyRefused) -> JSONResponse:
    """The API's answer to a body the course's request guard refused (413, or 400 not JSON)."""
    return api_error(refused.status_code, refused.message, code=refused.code)


def _parameters(params: type) -> frozenset[str]:
    return frozenset(params.__required_keys__ | params.__optional_keys__) | {"stream"}


# The top-level parameters the API knows, as the installed SDK sends them. Anything else is
# a 400, as on the real API (an ``extra_body`` typo does not pass silently). Known
# parameters the fake does not model (temperature, seed, ...) are accepted and ignored.
CHAT_PARAMETERS = _parameters(CompletionCreateParamsBase)
RESPONSES_PARAMETERS = _parameters(ResponseCreateParamsBase)


def _text_or_parts(value: Any) -> Any:
    """Content and input are a string or an array of parts (objects); null is checked later."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        return value
    raise PydanticCustomError("content_type", "expected a string or an array of objects")


TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # what the API allows as a function's name


class _Checked(BaseModel):
    # strict: `"stream": "yes"` or `"max_tokens": "5"` is a 400, not quietly converted.
    model_config = ConfigDict(strict=True, extra="ignore")


class ChatMessage(BaseModel):
    # Message fields the fake does not model (name, tool_calls, ...) are kept, not checked.
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Any = None  # required, see missing_content(); a string or parts

    _content = field_validator("content")(_text_or_parts)


class StreamOptions(_Checked):
    include_usage: bool = False


class FunctionDefinition(_Checked):
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(_Checked):
    """Chat Completions nests the function: ``{"type": "function", "function": {...}}``."""

    type: Literal["function"]  # the fake models function tools only
    function: FunctionDefinition


class ResponsesTool(FunctionDefinition):
    """The Responses API does not: ``{"type": "function", "name": ..., "parameters": ...}``."""

    type: Literal["function"]


# Excluded from model_dump(): a request without tools hashes to the same answer id as before
# the fake knew tools (stored notebook outputs show those ids); tools are hashed when present.
_TOOL_FIELD = {"default": None, "exclude": True}


class ChatRequest(_Checked):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[ChatTool] | None = Field(min_length=1, **_TOOL_FIELD)
    tool_choice: Any = Field(**_TOOL_FIELD)  # checked by _tool_choice()
    parallel_tool_calls: bool | None = Field(**_TOOL_FIELD)

    def tool_names(self) -> list[str]:
        return [tool.function.name for tool in self.tools or []]


class ResponsesRequest(_Checked):
    model: str
    input: Any  # a string or an array of input items
    instructions: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[ResponsesTool] | None = Field(min_length=1, **_TOOL_FIELD)
    tool_choice: Any = Field(**_TOOL_FIELD)
    parallel_tool_calls: bool | None = Field(**_TOOL_FIELD)

    _input = field_validator("input")(_text_or_parts)

    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.tools or []]


def tool_choice(req: ChatRequest | ResponsesRequest) -> str | JSONResponse | None:
    """``tool_choice`` as "auto", "none", "required" or the forced tool's name; or a 400."""
    names, choice = req.tool_names(), req.tool_choice
    if len(set(names)) < len(names):
        return api_error(
            400, "Invalid value for 'tools': tool names must be unique.", param="tools"
        )
    if choice is None:
        return None
    if not names:
        return api_error(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if choice in ("auto", "none", "required"):
        return choice
    # {"type": "function", "function": {"name": ...}} (Chat) or {"type": "function", "name": ...}
    named = choice.get("function", choice) if isinstance(choice, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or name is None:
        return api_error(
            400,
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
            "{'type': 'function', ...} naming one of the tools.",
            param="tool_choice",
        )
    if name not in names:
        return api_error(
            400,
            f"Invalid value for 'tool_choice': no tool named {name!r} in 'tools'.",
            param="tool_choice",
        )
    return str(name)


async def json_body(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object, or the API's 401/400 answer."""
    if request.headers.get("authorization", "").removeprefix("Bearer ").strip() == "":
        return api_error(
            401,
            "You didn't provide an API key. Any key works with the course's fake server.",
            code="missing_api_key",
        )
    try:
        body = read_json(await request.body())  # NaN, 1e309, bad UTF-8: not JSON either
    except ValueError:
        return api_error(
            400, "We could not parse the JSON body of your request.", code="invalid_json"
        )
    if not isinstance(body, dict):
        return api_error(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _param_path(loc: tuple[int | str, ...]) -> str | None:
    """Pydantic's ``("messages", 0, "role")`` as the API writes it: ``messages[0].role``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path or None


def missing_parameter(param: str) -> JSONResponse:
    return api_error(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    param = _param_path(first["loc"])
    if first["type"] == "missing" and param is not None:
        return missing_parameter(param)
    if first["type"].endswith("_type"):  # bool_type, int_type, content_type, ...
        return api_error(
            400, f"Invalid type for '{param}': {first['msg']}.", param=param, code="invalid_type"
        )
    return api_error(
        400, f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_value"
    )


def _stream_options_without_stream(req: ChatRequest | ResponsesRequest) -> JSONResponse | None:
    if req.stream_options is not None and not req.stream:
        return api_error(
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
            return missing_parameter(param)
        return api_error(
            400,
            f"Invalid type for '{param}': expected a string or an array of objects, got null.",
            param=param,
            code="invalid_type",
        )
    return None


def parse_chat(body: dict[str, Any]) -> ChatRequest | JSONResponse:
    """A checked ``/v1/chat/completions`` request, or the API's 400 answer."""
    if unknown := sorted(set(body) - CHAT_PARAMETERS):
        plural = "s" if len(unknown) > 1 else ""
        return api_error(
            400, f"Unrecognized request argument{plural} supplied: {', '.join(unknown)}"
        )
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as exc:
        return _validation_error(exc)
    if problem := _stream_options_without_stream(chat) or _missing_content(chat):
        return problem
    choice = tool_choice(chat)
    return choice if isinstance(choice, JSONResponse) else chat


def parse_responses(body: dict[str, Any]) -> ResponsesRequest | JSONResponse:
    """A checked ``/v1/responses`` request, or the API's 400 answer."""
    if unknown := sorted(set(body) - RESPONSES_PARAMETERS):
        return api_error(
            400, f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter"
        )
    try:
        req = ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        return _validation_error(exc)
    if problem := _stream_options_without_stream(req):
        return problem
    if req.input is None:
        return missing_parameter("input")
    choice = tool_choice(req)
    return choice if isinstance(choice, JSONResponse) else req
