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
