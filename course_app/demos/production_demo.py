"""Lesson 12's browser demos: streams that meet connection limits, auth and a deploy.

One app, three pages (``course_app/runtime/static/12_*.html``), each with the streams it opens:

- ``/connections?n=7`` opens ``n`` EventSources to ``/slot``: over HTTP/1.1 a browser runs
  six at a time per origin, over HTTP/2 all of them.
- ``/auth`` signs in with a cookie, then streams three ways: with the cookie (same origin,
  or cross-origin with ``withCredentials``), and with a short-lived signed link in the
  query string. A missing, forged or expired credential gets ``401`` before any stream
  starts. ``create_app(cors_origin=...)`` lets one other origin in, with credentials.
- ``/deploy`` shows a plain EventSource next to one with page-level reconnect logic, while
  the server behind nginx goes away (``502``), is full (``503``) or comes back.

The signed link is ``/signed-stream?user=ada&expires=<unix time>&sig=<hex>``, where
``sig`` is an HMAC-SHA256 of the path, the user and the expiry under the server's secret:
anyone can read it, nobody can change it, and it stops working by itself.

A link or token in a URL is a credential, and uvicorn's access log writes every request's
path with its query string: :func:`redact_access_log` keeps named query parameters out of
it (lesson 12's exercise app uses it for ``?token=``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Cookie, FastAPI, HTTPException, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from sse_starlette import EventSourceResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from course_app.runtime import html_page, pace
from course_app.streams import guard_requests

DEMO_SECRET = b"lesson-12-demo-secret: a real one comes from your settings, never from code"
SESSION_COOKIE = "session"


def sign(secret: bytes, *parts: str) -> str:
    """An HMAC-SHA256 of the parts (joined by ``|``), as hex."""
    return hmac.new(secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def signed_link(path: str, user: str, ttl: float, *, secret: bytes = DEMO_SECRET) -> str:
    """``path?user=..&expires=..&sig=..``, valid for ``ttl`` seconds."""
    expires = str(int(time.time() + ttl))
    return f"{path}?user={user}&expires={expires}&sig={sign(secret, path, user, expires)}"


class RedactQuery(logging.Filter):
    """A logging filter that replaces the values of some query parameters with ``<redacted>``.

    uvicorn logs each request as ``'%s - "%s %s HTTP/%s" %d'`` with the path and query string
    among the record's ``args``; the filter rewrites every string argument, so the line keeps
    its shape (``GET /events?token=<redacted> HTTP/1.1" 200``) and nothing else changes.
    """

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.names = names
        alternatives = "|".join(re.escape(name) for name in names)
        self._pattern = re.compile(rf"([?&](?:{alternatives})=)[^&\s\"]*")

    def redact(self, text: str) -> str:
        return self._pattern.sub(r"\1<redacted>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.redact(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True  # keep the line, without the secret


def redact_access_log(*names: str, logger: str = "uvicorn.access") -> None:
    """Keep the query parameters ``names`` out of uvicorn's access log (idempotent).

    The filter sits on the logger, so it stays when ``uvicorn.run`` configures logging
    (``logging.config.dictConfig`` replaces a logger's handlers, not its filters).
    """
    target = logging.getLogger(logger)
    if not any(isinstance(f, RedactQuery) and f.names == names for f in target.filters):
        target.addFilter(RedactQuery(*names))


class StreamCap:
    """ASGI middleware: at most ``limit`` requests under ``prefix`` in flight at once.

    The next one gets ``503 Service Unavailable`` with ``Retry-After`` before the app sees
    it, so no stream starts. The count drops when the app returns, however it ends.
    """

    def __init__(self, app: ASGIApp, *, prefix: str, limit: int, retry_after: int = 2) -> None:
        self.app, self.prefix, self.limit, self.retry_after = app, prefix, limit, retry_after
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            busy = JSONResponse(
                {"detail": "too many open streams, try again later"},
                status_code=503,
                headers={"Retry-After": str(self.retry_after)},
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def create_app(
    *,
    cors_origin: str | None = None,
    secret: bytes = DEMO_SECRET,
    link_ttl: float = 30.0,
    max_numbers: int | None = None,
    tick: float = 0.5,
    come_back_ms: int = 2000,
) -> FastAPI:
    """The demo app. ``cors_origin``: one other origin allowed in, with credentials.

    ``max_numbers``: a cap on open ``/numbers`` streams (503 + Retry-After beyond it);
    ``tick``: seconds between events, scaled by the pace; ``come_back_ms``: the ``retry``
    of the farewell a ``/numbers`` stream sends when the server shuts down.
    """
    app = FastAPI(title="Lesson 12: browser demos")
    guard_requests(app)
    app.state.slots_open = 0
    app.state.slot_requests = 0
    app.state.seen = []  # (path, user or "-") of every stream request, for the lesson to show
    if max_numbers is not None:
        app.add_middleware(StreamCap, prefix="/numbers", limit=max_numbers)
    if cors_origin is not None:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[cors_origin],
            allow_credentials=True,  # Access-Control-Allow-Credentials: true
            allow_methods=["GET", "POST"],
        )

    def session_user(session: str | None) -> str | None:
        """The user a session cookie names, if its signature is right."""
        user, _, signature = (session or "").partition(".")
        if user and hmac.compare_digest(signature, sign(secret, "session", user)):
            return user
        return None

    async def ticks(first: str, data: str) -> AsyncIterator[dict[str, Any]]:
        yield {"event": "hello", "data": first}
        n = 0
        while True:
            await pace.sleep(tick)
            n += 1
            yield {"event": "tick", "data": f"{data} {n}"}

    # -- seven streams on one origin ---------------------------------------------------------

    @app.get("/connections", response_class=HTMLResponse)
    async def connections_page() -> HTMLResponse:
        return html_page("12_connections.html")

    @app.get("/slot")
    async def slot(i: Annotated[int, Query(ge=0, le=100)] = 0) -> EventSourceResponse:
        app.state.slot_requests += 1

        async def stream() -> AsyncIterator[dict[str, Any]]:
            app.state.slots_open += 1
            try:
                async for event in ticks(str(i), f"stream {i}"):
                    yield event
            finally:
                app.state.slots_open -= 1

        return EventSourceResponse(stream())

    # -- auth for EventSource -----------------------------------------------------------------

    @app.get("/auth", response_class=HTMLResponse)
    async def auth_page() -> HTMLResponse:
        return html_page("12_auth.html")

    @app.post("/login")
    async def login(user: Annotated[str, Query(pattern=r"^[a-z]{1,20}$")] = "ada") -> Response:
        response = JSONResponse({"user": user})
        response.set_cookie(
            SESSION_COOKIE,
            f"{user}.{sign(secret, 'session', user)}",
            httponly=True,  # page scripts cannot read it; the browser still sends it
            samesite="lax",
        )
        return response

    @app.post("/logout")
    async def logout() -> Response:
        response = JSONResponse({"user": None})
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/cookie-stream")
    async def cookie_stream(
        session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
    ) -> EventSourceResponse:
        user = session_user(session)
        app.state.seen.append(("/cookie-stream", user or "-"))
        if user is None:  # before the stream: a real status, and EventSource gives up
            raise HTTPException(401, "sign in first")
        return EventSourceResponse(ticks(f"hello {user}", "update"))

    @app.get("/stream-link")
    async def stream_link(
        session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
        ttl: Annotated[float | None, Query(gt=-3600, le=3600)] = None,
    ) -> dict[str, str]:
        """A signed link to ``/signed-stream`` for the signed-in user (``ttl`` for demos)."""
        user = session_user(session)
        if user is None:
            raise HTTPException(401, "sign in first")
        return {
            "url": signed_link(
                "/signed-stream", user, link_ttl if ttl is None else ttl, secret=secret
            )
        }

    @app.get("/signed-stream")
    async def signed_stream(
        user: str = "", expires: str = "", sig: str = ""
    ) -> EventSourceResponse:
        app.state.seen.append(("/signed-stream", user or "-"))
        if not (user and re.fullmatch(r"[0-9]{1,12}", expires) and sig):
            raise HTTPException(401, "a signed link is needed")
        if not hmac.compare_digest(sig, sign(secret, "/signed-stream", user, expires)):
            raise HTTPException(401, "the link's signature is wrong")
        if int(expires) <= time.time():
            raise HTTPException(401, "the link has expired")
        return EventSourceResponse(ticks(f"hello {user}", "update"))

    # -- a deploy ------------------------------------------------------------------------------

    @app.get("/deploy", response_class=HTMLResponse)
    async def deploy_page() -> HTMLResponse:
        return html_page("12_deploy.html")

    @app.get("/numbers")
    async def numbers(request: Request, after: int = 0) -> EventSourceResponse:
        """Numbered events from ``after`` (or ``Last-Event-ID``) + 1; a farewell on shutdown."""
        last_id = request.headers.get("last-event-id", "")
        # ASCII digits only: str.isdigit() is also true for "²", which int() refuses (a 500).
        start = int(last_id) if re.fullmatch(r"[0-9]{1,18}", last_id) else after
        shutting_down = anyio.Event()

        async def stream() -> AsyncIterator[dict[str, Any]]:
            n = start
            while not shutting_down.is_set():
                n += 1
                yield {"event": "number", "id": str(n), "data": str(n)}
                with anyio.move_on_after(pace.scaled(tick)):
                    await shutting_down.wait()
            # Going away: tell the browser when to come back (the new server should be up).
            yield {"event": "bye", "data": "restarting", "retry": come_back_ms}

        return EventSourceResponse(stream(), shutdown_event=shutting_down, shutdown_grace_period=1)

    return app


app = create_app()
