"""Faults the fake OpenAI server injects on request, so lessons can show every failure.

Choose one per request with the ``X-Fake-Fault`` header or a model suffix
(``course-mini@rate-limit``):

- before the first byte: ``rate-limit`` (429 with ``retry-after``), ``server-error`` (500);
- slow: ``latency`` (the first token takes 2 s instead of 0.1 s, scaled by the pace);
- after three tokens: ``error-midstream`` (the API's error frame), ``bad-json`` (a frame
  whose JSON is cut in half), ``truncate`` (the body ends cleanly, without the final
  events: no ``finish_reason`` and no ``[DONE]``, no ``response.completed``), ``drop`` (the
  connection is cut mid-body: the client sees an incomplete chunked response);
- ``stall``: after three tokens the stream goes silent, no byte for :data:`STALL_SECONDS`
  (real seconds, whatever the pace), as a stuck upstream does: only a client timeout or
  deadline ends the wait.
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from course_app.fake_openai.requests import api_error

FAULTS = (
    "latency",
    "error-midstream",
    "rate-limit",
    "server-error",
    "drop",
    "bad-json",
    "truncate",
    "stall",
)
MIDSTREAM_FAULTS = frozenset({"error-midstream", "bad-json", "truncate", "drop"})
FAULT_AFTER_TOKENS = 3
STALL_SECONDS = 600.0  # longer than any client timeout a lesson sets
MIDSTREAM_MESSAGE = "The fake model failed mid-stream (fault 'error-midstream')."


class MidstreamFault(Exception):
    """Raised among the tokens; each wire format turns it into its own bytes (or none)."""

    def __init__(self, fault: str) -> None:
        super().__init__(fault)
        self.fault = fault


class Dropped(Exception):
    """The 'drop' fault: raised out of a streaming body so that uvicorn cuts the connection.

    uvicorn logs any exception from an app as a crash, with a traceback; this one is on
    purpose, and the fake logs its own one line instead (see :func:`quiet_drops`).
    """


def early_fault(fault: str | None) -> JSONResponse | None:
    """The answer for a fault that strikes before the first byte, if ``fault`` is one."""
    if fault == "rate-limit":
        return api_error(
            429,
            "Rate limit reached for course-mini (fault 'rate-limit'). Please try again in 1s.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": "1"},
        )
    if fault == "server-error":
        return api_error(
            500, "The fake server had an error (fault 'server-error').", type="server_error"
        )
    return None


def _is_drop(exc: BaseException | None) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_drop(inner) for inner in exc.exceptions)
    return isinstance(exc, Dropped)


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_drop(record.exc_info[1]))


def quiet_drops() -> None:
    """Keep uvicorn from logging the 'drop' fault as "Exception in ASGI application".

    First in line on ``uvicorn.error``: a filter that files the record somewhere else (the
    course's lesson-server logs do) would otherwise see it before this one drops it.
    """
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in uvicorn_error.filters):
        uvicorn_error.filters.insert(0, _QuietDrops())
