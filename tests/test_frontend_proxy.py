"""Lesson 12's Next.js stand-in: the compression rules and the flush make the difference.

Through the Node proxy (``course_app.demos.frontend_proxy``), a client that accepts gzip
gets the first event of a ``rewrites()``-style pipe only when the stream ends; with
``Cache-Control: no-transform``, without gzip (curl's default), or through a Route
Handler-style flush per chunk, it gets it while the stream is open. nginx's own ``gzip``
compresses even a ``no-transform`` response. Verdicts are orders of events (see
``first_event_arrival``), never durations.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from course_app.demos.frontend_proxy import (
    create_upstream_app,
    first_event_arrival,
    node_binary,
    start_frontend_proxy,
)
from course_app.runtime import LessonServer
from course_app.services import nginx_available, start_proxy

OPEN, ENDED = "while the stream was open", "only when the stream ended"


@pytest.fixture(scope="module")
def api() -> Iterator[LessonServer]:
    with LessonServer(create_upstream_app(), name="test-frontend-api") as server:
        yield server


@pytest.fixture(scope="module")
def frontend(api: LessonServer) -> Iterator[str]:
    if node_binary() is None:
        pytest.skip("Node.js is not installed")
    with start_frontend_proxy(api.port) as proxy:
        yield proxy.url


@pytest.mark.parametrize(
    ("path", "accept_gzip", "expected"),
    [
        ("/rewrite/gated", True, (ENDED, "gzip")),
        ("/rewrite/gated", False, (OPEN, "none")),  # curl's default: "works in curl"
        ("/rewrite/gated?no_transform=1", True, (OPEN, "none")),
        ("/route/gated", True, (OPEN, "gzip")),  # compressed, but flushed per chunk
    ],
)
def test_first_event_through_the_frontend(
    api: LessonServer, frontend: str, path: str, accept_gzip: bool, expected: tuple[str, str]
) -> None:
    got = first_event_arrival(frontend + path, api.app.state.gate, accept_gzip=accept_gzip)
    assert got == expected


def test_straight_from_the_api(api: LessonServer) -> None:
    assert first_event_arrival(api.url + "/gated", api.app.state.gate) == (OPEN, "none")


@pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")
def test_nginx_gzip_ignores_no_transform(api: LessonServer) -> None:
    with start_proxy(api, name="test-frontend-nginx", gzip=True, buffering=False) as proxy:
        got = first_event_arrival(proxy.url + "/gated?no_transform=1", api.app.state.gate)
    assert got == (OPEN, "gzip")
