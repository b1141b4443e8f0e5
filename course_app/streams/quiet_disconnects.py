"""A route class that keeps an ordinary client disconnect out of the error log.

FastAPI 0.163's native SSE (``response_class=EventSourceResponse`` on a generator path
operation) runs two tasks per stream: a producer that iterates your generator, and a
keepalive task (``_keepalive_inserter`` in ``fastapi/routing.py``) that forwards each
event, or a ``: ping`` after 15 s of silence, through a one-item memory stream to the
response. When the client leaves, the request's exit stack first *closes the receiving
end* of that stream and only then cancels the two tasks. If the keepalive task was waiting
to hand over an event at that moment (any stream with a backlog: a client resuming far
back, a burst, a client that read slowly), it wakes up to a closed stream and raises
``anyio.BrokenResourceError``. The task group wraps it in an ``ExceptionGroup``, and
uvicorn logs ``ERROR: Exception in ASGI application`` with a 60-line traceback, for a
client that did nothing but leave. (Reported upstream as fastapi/fastapi discussion
#15725; the fix proposed in fastapi/fastapi#15824 was not merged.)

:class:`QuietDisconnectRoute` contains exactly that case and nothing else::

    app = FastAPI()
    app.router.route_class = QuietDisconnectRoute  # before the routes are added

An exception coming out of a route is dropped (logged at DEBUG) only when all three hold:
the client has left (the server delivered ``http.disconnect``), every exception in it is
an ``anyio.BrokenResourceError``, and each was raised in FastAPI's keepalive task. Any
other error, before or after a disconnect, propagates and is logged as before. Once
FastAPI closes its streams in the other order, nothing matches and the class does nothing.
"""

from __future__ import annotations

import logging
import traceback

import anyio
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger("lesson.disconnects")

KEEPALIVE_TASK = "_keepalive_inserter"  # the function's name in fastapi/routing.py


def raised_by_keepalive_task(exc: BaseException) -> bool:
    """True for a BrokenResourceError raised inside FastAPI's SSE keepalive task."""
    if not isinstance(exc, anyio.BrokenResourceError):
        return False
    return any(frame.name == KEEPALIVE_TASK for frame in traceback.extract_tb(exc.__traceback__))


class QuietDisconnectRoute(APIRoute):
    """An APIRoute whose streams end silently when the client leaves (see the module)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        client_left = False

        async def watched_receive() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect":
                client_left = True
            return message

        try:
            await super().handle(scope, watched_receive, send)
        except BaseExceptionGroup as group:
            if not client_left:
                raise
            _, rest = group.split(raised_by_keepalive_task)
            if rest is not None:
                raise
            logger.debug(
                "%s %s: the client left while an event was being handed over",
                scope.get("method"),
                scope.get("path"),
            )
