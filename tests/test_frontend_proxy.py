"""Lesson 12: a real Next.js app (``frontends/nextjs``, under ``next dev``) in front of the API.

- A client that accepts gzip gets the first event through ``rewrites()`` only when the
  stream ends (Next gzips the proxied stream and never flushes); without gzip (curl's
  default), with ``Cache-Control: no-transform`` from the API, with ``compress: false``,
  or through the Route Handler (flushed per chunk), it gets it while the stream is open.
- A client that leaves stops the API's stream through ``rewrites()`` and through the Route
  Handler, the latter only because it passes ``request.signal`` on to its ``fetch``: the
  same handler without it keeps the API streaming to nobody.
- nginx's own ``gzip`` compresses even a ``no-transform`` response.

Verdicts are orders of events (see ``first_event_arrival`` and ``after_client_leaves``),
never durations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from course_app.demos.frontend_proxy import (
    FRONTEND_DIR,
    NextFrontend,
    after_client_leaves,
    create_upstream_app,
    first_event_arrival,
    next_problem,
)
from course_app.runtime import LessonServer
from course_app.services import nginx_available, start_proxy
from tests.unavailable import unavailable

OPEN, ENDED = "while the stream was open", "only when the stream ended"
FORWARD_JS = "frontends/nextjs/app/forward.js"  # what the Route Handlers do


@pytest.fixture(scope="module")
def api() -> Iterator[LessonServer]:
    with LessonServer(create_upstream_app(), name="test-frontend-api") as server:
        yield server


def _next(api: LessonServer, name: str, *, compress: bool = True) -> NextFrontend:
    problem = next_problem()
    if problem is not None:
        unavailable(problem)
    return NextFrontend(api.port, name=name, compress=compress)


@pytest.fixture(scope="module")
def frontend(api: LessonServer) -> Iterator[str]:
    with _next(api, "test-frontend") as next_app:
        yield next_app.url


@pytest.mark.parametrize(
    ("path", "accept_gzip", "expected"),
    [
        ("/rewrite/gated", True, (ENDED, "gzip")),  # what a browser gets
        ("/rewrite/gated", False, (OPEN, "none")),  # curl's default: "works in curl"
        ("/rewrite/gated?no_transform=1", True, (OPEN, "none")),
        ("/route/gated", True, (OPEN, "gzip")),  # compressed, but flushed per chunk
        ("/route/gated", False, (OPEN, "none")),
        ("/route/gated?no_transform=1", True, (OPEN, "none")),
    ],
)
def test_first_event_through_next(
    api: LessonServer, frontend: str, path: str, accept_gzip: bool, expected: tuple[str, str]
) -> None:
    got = first_event_arrival(frontend + path, api.app, accept_gzip=accept_gzip)
    hint = ""
    if path.startswith("/route/") and got[0] != OPEN:
        hint = f": does {FORWARD_JS} return `new Response(upstream.body)`, not a body it awaited?"
    elif "no_transform" in path and got[1] == "gzip":
        hint = ": did the API's Cache-Control lose `no-transform`?"
    assert got == expected, f"{path} (gzip accepted: {accept_gzip}): {got}{hint}"


def test_compress_false_lets_rewrites_through(api: LessonServer) -> None:
    with _next(api, "test-frontend-no-compress", compress=False) as uncompressed:
        got = first_event_arrival(uncompressed.url + "/rewrite/gated", api.app)
    assert got == (OPEN, "none"), "COURSE_NEXT_COMPRESS=0 should set `compress: false`"


def test_straight_from_the_api(api: LessonServer) -> None:
    assert first_event_arrival(api.url + "/gated", api.app) == (OPEN, "none")


@pytest.mark.parametrize("path", ["/rewrite/endless", "/route/endless"])
def test_a_client_that_leaves_stops_the_api_stream(
    api: LessonServer, frontend: str, path: str
) -> None:
    got = after_client_leaves(frontend + path, api.app)
    hint = ""
    if got == "no first event":
        hint = f": does {FORWARD_JS} return `new Response(upstream.body)`, not a body it awaited?"
    elif path.startswith("/route/"):
        hint = (
            f": does {FORWARD_JS} pass `signal: request.signal` to its fetch? Next does not"
            " cancel the body it is sending when the client leaves (vercel/next.js#93906)"
        )
    assert got == "stopped", f"{path}: after its client left, the API's stream {got}{hint}"


def test_without_the_signal_the_api_streams_to_nobody(api: LessonServer, frontend: str) -> None:
    # Whether Next cancels the body it pipes is a race it nearly always loses (40 of 40
    # runs kept streaming when measured): one try in three that kept streaming shows it.
    url = frontend + "/route-no-signal/endless"
    outcomes = []
    for _ in range(3):
        outcomes.append(after_client_leaves(url, api.app))
        if outcomes[-1] == "kept streaming":
            break
    assert "kept streaming" in outcomes, (
        f"{outcomes}: has Next started to cancel a Route Handler's body when the client"
        " leaves (vercel/next.js#93906)? Then the lesson's advice about `request.signal`"
        " is still right, but its table changes"
    )


def test_straight_from_the_api_leaving_stops_it(api: LessonServer) -> None:
    assert after_client_leaves(api.url + "/endless", api.app) == "stopped"


def test_next_writes_nothing_into_the_repository(frontend: str) -> None:
    # Runs while `next dev` serves: next.config.mjs turns off its AGENTS.md, and the helper
    # runs it from its own temp folder, where Next keeps a telemetry preferences file
    # (`<working directory>/cache`) in CI and containers, even with telemetry disabled.
    assert not (FRONTEND_DIR / "AGENTS.md").exists(), "is `agentRules: false` still set?"
    for folder in (FRONTEND_DIR, FRONTEND_DIR.parents[1], Path.cwd()):
        assert not (folder / "cache").exists(), f"Next wrote {folder / 'cache'}"


@pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")
def test_nginx_gzip_ignores_no_transform(api: LessonServer) -> None:
    with start_proxy(api, name="test-frontend-nginx", gzip=True, buffering=False) as proxy:
        got = first_event_arrival(proxy.url + "/gated?no_transform=1", api.app)
    assert got == (OPEN, "gzip")
