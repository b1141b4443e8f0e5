"""Lesson 12: a stream that is ready for production.

`GET /events?token=...` streams `tick` events to one signed-in user. Before any stream
starts it answers `401` to a missing, malformed, forged or expired token, and `503` with
`Retry-After` when `max_streams` streams are already open. While it streams it sends a
heartbeat comment whenever it has been quiet for `heartbeat` seconds, drops a client that
stops reading (`send_timeout`), and when the server shuts down it sends a last `bye` event
whose `retry:` tells the browser when to come back.

A token is `<user>.<expires>.<signature>`: the user, a Unix time, and an HMAC-SHA256 of
`<user>.<expires>` under the server's secret, as `issue_token()` below makes it. The
server hands one out to a signed-in page (with a cookie or an Authorization header, which
`fetch()` can send); the page puts it in the EventSource URL, which cannot carry headers.

Check your work: `course check 12`. Or `course serve 12` and, in another terminal:
    TOKEN=$(python -c 'from course_app.checking import load_exercise as l; print(l("12_production").issue_token("ada", 600))')
    curl -N "http://127.0.0.1:8000/events?token=$TOKEN"
"""

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException
from sse_starlette import EventSourceResponse

from course_app.demos.production_demo import redact_access_log
from course_app.runtime import pace

# A real secret comes from the environment or a secrets store, never from the code.
SECRET = b"lesson-12-exercise-secret"


class TokenError(Exception):
    """A token that must be refused; ``reason`` is missing, malformed, forged or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token {reason}")
        self.reason = reason


def _signature(payload: str, secret: bytes) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def issue_token(user: str, ttl: float, *, now: float | None = None, secret: bytes = SECRET) -> str:
    """A token for ``user`` that expires ``ttl`` seconds from ``now`` (given: not a TODO)."""
    expires = int((time.time() if now is None else now) + ttl)
    payload = f"{user}.{expires}"
    return f"{payload}.{_signature(payload, secret)}"


def verify_token(token: str | None, *, now: float | None = None, secret: bytes = SECRET) -> str:
    """The user a valid token names; raises :class:`TokenError` otherwise."""
    # TODO: raise TokenError("missing") for None or "".
    # TODO: raise TokenError("malformed") unless the token is three dot-separated parts
    #       `user.expires.signature` with a non-empty user and an `expires` of digits only.
    # TODO: raise TokenError("forged") unless the signature is `_signature("<user>.<expires>",
    #       secret)`. Compare with hmac.compare_digest, never with ==.
    # TODO: raise TokenError("expired") if `expires` is not later than `now` (time.time()
    #       when now is None); else return the user.
    ### BEGIN SOLUTION
    if not token:
        raise TokenError("missing")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        raise TokenError("malformed")
    user, expires, signature = parts
    if not hmac.compare_digest(signature, _signature(f"{user}.{expires}", secret)):
        raise TokenError("forged")
    if int(expires) <= (time.time() if now is None else now):
        raise TokenError("expired")
    return user
    ### END SOLUTION


class StreamSlots:
    """How many streams this process has open; at most ``limit`` (given: not a TODO)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.peak = 0

    def take(self) -> bool:
        """Take a slot if one is free; False when all ``limit`` are in use."""
        if self.open >= self.limit:
            return False
        self.open += 1
        self.peak = max(self.peak, self.open)
        return True

    def give_back(self) -> None:
        if self.open <= 0:
            raise RuntimeError("gave back a slot that was not taken")
        self.open -= 1


def create_app(
    *,
    max_streams: int = 100,
    retry_after: int = 5,
    heartbeat: float = 15.0,
    send_timeout: float = 10.0,
    come_back_ms: int = 3000,
    interval: float = 1.0,
    pad: int = 0,
    secret: bytes = SECRET,
) -> FastAPI:
    """The app. ``interval`` is scaled by the pace; ``pad`` adds characters to each tick."""
    app = FastAPI(title="Lesson 12: a production-ready stream")
    # The token is a credential in the URL, and uvicorn's access log writes the query
    # string: this server logs `GET /events?token=<redacted>` instead (given: not a TODO).
    redact_access_log("token")
    slots = StreamSlots(max_streams)
    app.state.slots = slots

    async def stream_user(token: str | None = None) -> str:
        """Dependency: the user named by ``?token=``, or a 401 before any stream starts."""
        # TODO: return verify_token(token, secret=secret); turn a TokenError into
        #       HTTPException(401, detail=str(error), headers={"WWW-Authenticate": "Bearer"}).
        ### BEGIN SOLUTION
        try:
            return verify_token(token, secret=secret)
        except TokenError as error:
            raise HTTPException(
                401, detail=str(error), headers={"WWW-Authenticate": "Bearer"}
            ) from None
        ### END SOLUTION

    async def stream_slot() -> AsyncIterator[None]:
        """Dependency: holds one of ``slots`` for as long as the response runs."""
        # TODO: take a slot; when none is free, answer HTTPException(503, detail="too many
        #       open streams", headers={"Retry-After": str(retry_after)}).
        # TODO: yield while the stream runs, and give the slot back on every ending
        #       (last event, client gone, send timeout, shutdown). Which block runs on all?
        ### BEGIN SOLUTION
        if not slots.take():
            raise HTTPException(
                503, detail="too many open streams", headers={"Retry-After": str(retry_after)}
            )
        try:
            yield
        finally:
            slots.give_back()
        ### END SOLUTION

    async def ticks(user: str, shutting_down: anyio.Event) -> AsyncIterator[dict[str, Any]]:
        """Events 1, 2, 3, ... every ``interval`` seconds, until the server shuts down."""
        # TODO: until `shutting_down` is set: yield {"event": "tick", "id": str(n), "data":
        #       json.dumps({"user": user, "n": n, "pad": "x" * pad})} for n = 1, 2, ...,
        #       then wait `pace.scaled(interval)` seconds, or less if `shutting_down` is
        #       set meanwhile (anyio.move_on_after around `await shutting_down.wait()`).
        # TODO: after the loop, yield one last {"event": "bye", "data": "server restarting",
        #       "retry": come_back_ms}: the browser waits that long before reconnecting.
        ### BEGIN SOLUTION
        n = 0
        while not shutting_down.is_set():
            n += 1
            yield {
                "event": "tick",
                "id": str(n),
                "data": json.dumps({"user": user, "n": n, "pad": "x" * pad}),
            }
            with anyio.move_on_after(pace.scaled(interval)):
                await shutting_down.wait()
        yield {"event": "bye", "data": "server restarting", "retry": come_back_ms}
        ### END SOLUTION

    # Parameters are resolved in order: the token is checked before a slot is taken, so a
    # client without a valid token never holds one, even for a moment.
    @app.get("/events")
    async def events(
        user: Annotated[str, Depends(stream_user)],
        _slot: Annotated[None, Depends(stream_slot)],
    ) -> EventSourceResponse:
        # TODO: make `shutting_down = anyio.Event()` and return an EventSourceResponse of
        #       ticks(user, shutting_down) that sends a heartbeat after `heartbeat` quiet
        #       seconds, drops a client whose send takes longer than `send_timeout`, and on
        #       shutdown sets `shutting_down` and gives the generator 1 second to say bye
        #       (sse-starlette's keyword arguments).
        ### BEGIN SOLUTION
        shutting_down = anyio.Event()
        return EventSourceResponse(
            ticks(user, shutting_down),
            ping=heartbeat,
            send_timeout=send_timeout,
            shutdown_event=shutting_down,
            shutdown_grace_period=1,
        )
        ### END SOLUTION

    return app


app = create_app()
