"""What every course app does with a request body it cannot read: a 4xx, never a 500.

A client may send any bytes at all. Left to themselves, FastAPI apps answer some of them
with a 500 (found by sending them: lesson 09's and 13's issue):

* ``1e309`` parses to ``inf`` (so do ``NaN`` and ``Infinity``, which Python's ``json``
  accepts). FastAPI's 422 echoes the input, and writing that 422 then fails with
  ``ValueError: Out of range float values are not JSON compliant``: a 500.
* bytes that are not UTF-8, echoed in a 422, fail the same way (``UnicodeDecodeError``).
* a body nested 100 000 levels deep makes ``json.loads`` raise ``RecursionError``.
* with no limit, a 20 MB body is read into memory before anyone looks at it.

:func:`guard_requests` installs the two halves of the fix on an app, once:

* :class:`RequestBodyGuard`, a pure ASGI middleware: ``413`` for a body over ``max_body``
  bytes, told by its ``Content-Length`` before the app runs, or counted while a chunked body
  is read; and, when the app reads a JSON body (``application/json``, ``+json``, or no
  content type), a ``422`` unless it is UTF-8 JSON without ``NaN``/``Infinity``, out-of-range
  numbers or more than 200 levels of nesting. It checks the body when the app asks for it,
  so a route that never reads its body answers as before.
* a ``RequestValidationError`` handler that answers FastAPI's usual 422, with any echoed
  input made writable (``inf`` becomes ``"inf"``, bad bytes become U+FFFD): the 422 itself
  can no longer fail.

    app = FastAPI()
    guard_requests(app, max_body=16 * 1024)

Not BaseHTTPMiddleware: that runs the app in a task of its own and relays every response,
streams included, through a memory stream; this needs none of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic_core import from_json
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 1024 * 1024  # bytes: plenty for the course's JSON requests


class BodyRefused(HTTPException):
    """A request body the app will not read: too large (413) or not readable JSON.

    An ``HTTPException``, so that FastAPI hands it to the app's exception handlers when it
    is raised while the app reads the body (a custom handler may answer in its own shape:
    ``message`` is the sentence, ``code`` a short name for it).
    """

    def __init__(self, status_code: int, message: str, code: str) -> None:
        detail: Any = message
        if status_code == 422:  # FastAPI's shape for a body it cannot parse
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": message}]
        super().__init__(status_code, detail)
        self.message = message
        self.code = code


def too_large(limit: int) -> BodyRefused:
    return BodyRefused(413, f"the body is larger than {limit} bytes", "body_too_large")


def read_json(body: bytes) -> Any:
    """``body`` parsed as JSON, or ``ValueError`` saying in one sentence what is wrong.

    Pydantic's parser (what FastAPI validates with) refuses lone UTF-16 surrogates, NaN and
    Infinity, integers over 4300 digits and nesting deeper than 200 levels, with the
    position; ``1e309`` still parses (to ``inf``), so it is looked for afterwards.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"Invalid JSON: the body is not UTF-8 text (byte {exc.start} is {body[exc.start]:#04x})"
        ) from None
    try:
        value = from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        try:  # is it only NaN or Infinity? Then say so: "expected value" would not help
            from_json(body, allow_inf_nan=True)
        except ValueError:
            raise ValueError(f"Invalid JSON: {exc}") from None
        raise ValueError("Invalid JSON: NaN and Infinity are not JSON numbers") from None
    if (number := _first_non_finite(value)) is not None:
        raise ValueError(f"Invalid JSON: a number out of range (it reads as {number})")
    return value


def json_problem(body: bytes) -> str | None:
    """Why ``body`` is not JSON an app can read (see :func:`read_json`); None if it is."""
    try:
        read_json(body)
    except ValueError as exc:
        return str(exc)
    return None


def _first_non_finite(value: Any) -> float | None:
    pending = [value]  # no recursion: the parser allows 200 levels
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return item
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _is_json(content_type: str | None) -> bool:
    """FastAPI parses a body as JSON with this content type (or none at all)."""
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


Answer = Callable[[BodyRefused], Response]


def _detail_answer(refusal: BodyRefused) -> Response:
    return JSONResponse({"detail": refusal.detail}, status_code=refusal.status_code)


class RequestBodyGuard:
    """ASGI middleware: a body over ``max_body`` bytes is a 413; a JSON body that is not
    readable JSON is ``bad_json_status`` (422 by default).

    The 413 for a declared ``Content-Length`` is answered before the app runs. Everything
    else happens when the app calls ``receive()`` for the body: the guard reads the whole
    body (counting: a chunked body has no length to check), checks it, and then hands it to
    the app in one piece, or raises :class:`BodyRefused`, which FastAPI's exception
    handlers answer (or this middleware, when the app has none).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        bad_json_status: int = 422,
        answer: Answer = _detail_answer,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.bad_json_status = bad_json_status
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            # uvicorn reads and drops the unread body after the answer: the connection
            # stays usable, and the client gets the 413 rather than a reset.
            await self.answer(too_large(self.max_body))(scope, receive, send)
            return
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared in ("", "0") and not chunked:  # no body: nothing to guard
            await self.app(scope, receive, send)
            return
        check_json = _is_json(headers.get("content-type"))
        body = bytearray()  # out here: a read cancelled half-way resumes where it stopped
        started = handed_over = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def guarded_receive() -> Message:
            nonlocal handed_over
            if handed_over or started:
                # The body has been handed over (what follows is http.disconnect), or the
                # response is under way (a stream listening for disconnects): no 4xx can
                # be sent any more, so messages pass through.
                return await receive()
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client left while sending
                    handed_over = True
                    return message  # Starlette's Request raises ClientDisconnect
                body.extend(message.get("body", b""))
                if len(body) > self.max_body:
                    raise too_large(self.max_body)
                if not message.get("more_body", False):
                    break
            handed_over = True
            if body and check_json and (problem := json_problem(bytes(body))):
                raise BodyRefused(self.bad_json_status, problem, "invalid_json")
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except BodyRefused as refusal:  # the app had no handler for it
            if started:
                raise
            await self.answer(refusal)(scope, receive, send)
        except ClientDisconnect:
            # The client left before its body arrived: nobody to answer, nothing to log.
            if not started:
                return
            raise


def _writable(value: Any) -> Any:
    """``value`` with what JSON cannot hold made readable: inf/nan, bytes, lone surrogates."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_writable(k): _writable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(item) for item in value]
    return value


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 (``{"detail": [...]}``), which cannot fail while it is written.

    FastAPI's own handler echoes each error's ``input``; an ``inf`` or a non-UTF-8 byte
    there makes the 422 itself raise, and the client gets a 500.
    """
    return JSONResponse({"detail": jsonable_encoder(_writable(exc.errors()))}, status_code=422)


def guard_requests(
    app: FastAPI,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    bad_json_status: int = 422,
    answer: Answer = _detail_answer,
) -> FastAPI:
    """Install the body limit, the JSON check and the safe 422 on ``app``; returns it.

    ``answer`` builds the response for a refusal the app's own handlers do not see (a
    declared ``Content-Length`` over the limit): an app with its own error shape (the fake
    OpenAI server) passes one.
    """
    app.add_middleware(
        RequestBodyGuard, max_body=max_body, bad_json_status=bad_json_status, answer=answer
    )
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    return app
