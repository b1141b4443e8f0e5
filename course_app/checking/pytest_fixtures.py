"""A pytest fixture that runs your app on a real uvicorn server for the length of a test.

In-process clients (Starlette's ``TestClient``) cannot show what only a real socket shows:
a client that disconnects, a stream that stalls, heartbeats over time, several clients at
once, a shutdown with streams open. ``live_server`` starts an app with the course's
:class:`~course_app.runtime.server.LessonServer` on a free loopback port and stops it (bounded,
even with streams open) when the test ends::

    def test_stream_ends_with_done(live_server):
        server = live_server(create_app())
        with httpx.Client() as http, httpx_sse.connect_sse(http, "GET", server.url + "/feed") as s:
            assert [e.event for e in s.iter_sse()][-1] == "done"

Use it in your own project: with this course installed in the environment (``pip install
-e path/to/course``), add ``pytest_plugins = ["course_app.checking.pytest_fixtures"]`` to your top-level
``conftest.py``; or import the fixture into a test module:
``from course_app.checking.pytest_fixtures import live_server``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from course_app.runtime import LessonServer

StartServer = Callable[..., LessonServer]


@pytest.fixture
def live_server(request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """``live_server(app, **options)`` starts ``app``; every server stops after the test.

    ``options`` go to :class:`LessonServer` (``grace=`` bounds the stop with streams open).
    """
    started: list[LessonServer] = []

    def start(app: Any, **options: Any) -> LessonServer:
        name = f"test-{request.node.name}-{len(started)}"
        server = LessonServer(app, name=name, **options).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


# -- for a whole test module: one client, one server --------------------------------------------
# Each httpx.Client() loads the CA bundle (0.1-0.2 s of CPU on a small machine) and each
# server stop waits for uvicorn's 0.1 s tick: a module of twenty short tests pays seconds for
# them. These fixtures pay once per module and keep each test's app its own.


@pytest.fixture(scope="module")
def loopback_client() -> Iterator[httpx.Client]:
    """One httpx client for a test module's plain-HTTP requests to loopback servers.

    No TLS is spoken to 127.0.0.1, so no CA bundle is loaded; no connection is kept alive
    between requests, so a request never reuses a connection the server is just closing.
    """
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=10, verify=False, limits=limits) as client:
        yield client


class PluggedApp:
    """One test's app on a :class:`SharedServer`: its url, its app, its log lines."""

    def __init__(self, server: LessonServer, app: Any) -> None:
        self.server = server
        self.app = app
        self._first_line = len(server.logs)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def logs(self) -> list[str]:
        """The server's log lines since this app was plugged in (not an earlier test's)."""
        return self.server.logs[self._first_line :]


class SharedServer:
    """One LessonServer for a test module; each test plugs in a fresh app of its own.

    Requests go to the app plugged in last; a stream still open keeps the app it started
    with. Plugged apps get no lifespan events: an app that fills its state at startup needs
    a server of its own. :meth:`stop` before a test that must be the only server running
    (sse-starlette's shutdown flag is process-wide); the next :meth:`plug` starts it again.
    """

    def __init__(self, name: str, grace: float = 0.5) -> None:
        self._app: Any = None

        # A plain function, not a method: uvicorn takes a bound method for an ASGI2 app.
        async def route(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":  # the server's own: nothing to start or stop
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            await self._app(scope, receive, send)

        self._server = LessonServer(route, name=name, grace=grace)

    def plug(self, app: Any) -> PluggedApp:
        """Serve ``app`` from now on (starting the server if it is not running)."""
        self._app = app
        if not self._server.running:
            self._server.start()
        return PluggedApp(self._server, app)

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="module")
def shared_server(request: pytest.FixtureRequest) -> Iterator[SharedServer]:
    """A :class:`SharedServer` for the test module, stopped after its last test."""
    shared = SharedServer(name=f"shared-{request.module.__name__.rpartition('.')[2]}")
    try:
        yield shared
    finally:
        shared.stop()
