"""Lesson 12's pages in Chromium: connection limits, HTTP/2 through nginx, auth, a deploy."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from course_app.demos.production_demo import create_app
from course_app.runtime import LessonServer
from course_app.services import NGINX_HINT, NginxProxy, nginx_available
from tests.unavailable import unavailable

OPEN = "n => document.getElementById('open').textContent === String(n)"


@pytest.fixture
def nginx() -> None:
    """Skips without nginx on a learner's machine; fails in CI, where it must run."""
    if not nginx_available():
        message = f"this test needs nginx: {NGINX_HINT}"
        unavailable(message)


@pytest.fixture
def demo() -> Iterator[LessonServer]:
    with LessonServer(create_app(), name="b12") as server:
        yield server


def item_states(page) -> list[str]:
    return page.eval_on_selector_all("#streams li", "items => items.map(li => li.dataset.state)")


# -- connection limits -----------------------------------------------------------------------


def test_http1_the_seventh_stream_waits_until_one_of_six_closes(demo: LessonServer, page) -> None:
    page.goto(demo.url + "/connections?n=7")
    page.wait_for_function(OPEN, arg=6)
    assert page.locator("#protocol").text_content() == "http/1.1"
    # Give the seventh every chance to open: it does not, and never reached the server.
    page.wait_for_timeout(500)
    assert item_states(page) == ["open"] * 6 + ["waiting"]
    assert demo.app.state.slot_requests == 6
    page.click("#close-first")
    page.wait_for_function(
        "document.querySelector('#streams li:last-child').dataset.state === 'open'"
    )
    assert item_states(page) == ["closed"] + ["open"] * 6
    assert demo.app.state.slot_requests == 7


def test_http2_through_nginx_all_seven_stream_at_once(
    nginx: None, demo: LessonServer, browser
) -> None:
    with NginxProxy(demo, name="b12-h2", http2=True) as proxy:
        # The certificate was made for this test: tell Chromium to accept it.
        context = browser.new_context(ignore_https_errors=True)
        try:
            page = context.new_page()
            page.goto(proxy.https_url + "/connections?n=7")
            page.wait_for_function(OPEN, arg=7)
            assert page.locator("#protocol").text_content() == "h2"
            assert item_states(page) == ["open"] * 7
        finally:
            context.close()
        # nginx logs a request when it ends: the page closed its streams with the context.
        deadline = time.monotonic() + 10
        while len(slots := [x for x in proxy.access_log() if "/slot" in x]) < 7:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
    assert len(slots) == 7
    assert all("HTTP/2.0" in line for line in slots)


# -- auth ------------------------------------------------------------------------------------


def try_stream(page, url: str, with_credentials: bool = False) -> str:
    return page.evaluate(
        "([url, cred]) => tryStream(url, cred ? {withCredentials: true} : {})",
        [url, with_credentials],
    )


def test_cookie_session_same_origin(demo: LessonServer, page) -> None:
    page.goto(demo.url + "/auth")
    assert try_stream(page, "/cookie-stream") == "refused: EventSource closed"
    assert page.evaluate("fetch('/login', {method: 'POST'}).then(r => r.status)") == 200
    assert try_stream(page, "/cookie-stream") == "streaming: hello ada"
    # HttpOnly: the page's scripts cannot read the session, yet the browser sends it.
    assert page.evaluate("document.cookie") == ""
    page.evaluate("fetch('/logout', {method: 'POST'})")
    assert try_stream(page, "/cookie-stream") == "refused: EventSource closed"
    assert demo.app.state.seen == [
        ("/cookie-stream", "-"),
        ("/cookie-stream", "ada"),
        ("/cookie-stream", "-"),
    ]


def test_signed_link_in_the_query_string(demo: LessonServer, page) -> None:
    page.goto(demo.url + "/auth")
    assert page.evaluate("signedLink()") is None  # not signed in: no link
    page.evaluate("fetch('/login', {method: 'POST'})")
    link = page.evaluate("signedLink()")
    assert link.startswith("/signed-stream?user=ada&expires=")
    assert try_stream(page, link) == "streaming: hello ada"
    assert try_stream(page, link.replace("user=ada", "user=eve")) == "refused: EventSource closed"
    expired = page.evaluate("signedLink(-1)")
    assert try_stream(page, expired) == "refused: EventSource closed"
    assert try_stream(page, "/signed-stream") == "refused: EventSource closed"
    refusals = [
        httpx.get(demo.url + url).json()["detail"]
        for url in (link.replace("user=ada", "user=eve"), expired, "/signed-stream")
    ]
    assert refusals == [
        "the link's signature is wrong",
        "the link has expired",
        "a signed link is needed",
    ]


def test_cross_origin_needs_with_credentials_and_credentialed_cors(page) -> None:
    with LessonServer(create_app(), name="b12-site") as site:
        with (
            LessonServer(create_app(cors_origin=site.url), name="b12-api") as api,
            LessonServer(create_app(), name="b12-no-cors") as no_cors,
        ):
            page.goto(site.url + "/auth")
            page.evaluate("fetch('/login', {method: 'POST'})")  # a cookie for 127.0.0.1
            # Without withCredentials the cookie stays home: 401, and EventSource gives up.
            assert try_stream(page, api.url + "/cookie-stream") == "refused: EventSource closed"
            # With it, and a server that allows this origin with credentials: it streams.
            assert (
                try_stream(page, api.url + "/cookie-stream", with_credentials=True)
                == "streaming: hello ada"
            )
            assert api.app.state.seen == [("/cookie-stream", "-"), ("/cookie-stream", "ada")]
            # A server without CORS still ran the request, with the cookie (cookies ignore
            # ports), but the browser refused to hand its answer to the page.
            assert (
                try_stream(page, no_cors.url + "/cookie-stream", with_credentials=True)
                == "refused: EventSource closed"
            )
            assert no_cors.app.state.seen == [("/cookie-stream", "ada")]


# -- deploys ---------------------------------------------------------------------------------


def pane(page, name: str) -> dict[str, object]:
    return page.evaluate(
        "name => ({state: window.panes[name].source.readyState, last: Number(window.panes[name].last),"
        " reconnects: window.panes[name].reconnects})",
        name,
    )


def both_streaming(page, after: int = 0) -> None:
    page.wait_for_function(
        "after => ['plain', 'resilient'].every(n => window.panes[n] &&"
        " window.panes[n].source.readyState === 1 && Number(window.panes[n].last) > after)",
        arg=after,
    )


def test_full_server_503_closes_eventsource_and_the_page_retries(page) -> None:
    with LessonServer(create_app(max_numbers=1), name="b12-full") as server:
        with httpx.Client(timeout=10) as client:
            with client.stream("GET", server.url + "/numbers") as holder:
                assert holder.status_code == 200  # holds the only slot
                page.goto(server.url + "/deploy?base=100")
                page.wait_for_function("window.panes.resilient.reconnects >= 1")
                refused = httpx.get(server.url + "/numbers", timeout=10)
                assert (refused.status_code, refused.headers["retry-after"]) == (503, "2")
        # The slot is free: the page's own retry gets in; the plain EventSource gave up.
        page.wait_for_function("window.panes.resilient.source.readyState === 1")
        page.wait_for_function("Number(window.panes.resilient.last) >= 1")
        assert pane(page, "plain")["state"] == 2  # CLOSED, for good


def test_deploy_through_nginx_502_then_only_the_page_level_reconnect_comes_back(
    nginx: None, page
) -> None:
    # Only this lesson server runs: its stop() tells sse-starlette streams to say bye.
    server = LessonServer(create_app(come_back_ms=300), name="b12-deploy", grace=3).start()
    port = server.port
    try:
        with NginxProxy(server, name="b12-nginx") as proxy:
            page.goto(proxy.url + "/deploy?base=100")
            both_streaming(page, after=2)
            server.stop()  # the deploy begins: streams say bye (retry: 300), the port is closed
            # Each EventSource comes back after 300 ms, gets nginx's 502, and gives up.
            page.wait_for_function("window.panes.plain.source.readyState === 2")
            page.wait_for_function("window.panes.resilient.reconnects >= 1")
            last = pane(page, "resilient")["last"]
            assert httpx.get(proxy.url + "/numbers", timeout=10).status_code == 502
            server = LessonServer(create_app(), name="b12-deploy", port=port).start()
            # The new server is up: the page's own retry reconnects and resumes after `last`.
            page.wait_for_function(
                "last => window.panes.resilient.source.readyState === 1 &&"
                " Number(window.panes.resilient.last) > last",
                arg=last,
            )
            assert pane(page, "plain")["state"] == 2
            deadline = time.monotonic() + 5  # nginx logs a request just after answering it
            while not any('502 "GET /numbers' in line for line in proxy.access_log()):
                assert time.monotonic() < deadline, "nginx logged no 502 for /numbers"
                time.sleep(0.01)
    finally:
        server.stop()


PROBE = """() => {
    const probe = {errors: [], opens: 0, numbers: []};
    probe.source = new EventSource('/numbers');
    probe.source.onopen = () => { probe.opens += 1; };
    probe.source.onerror = () => { probe.errors.push(probe.source.readyState); };
    probe.source.addEventListener('number', e => probe.numbers.push(Number(e.data)));
    window.probe = probe;
}"""


def test_refused_connections_are_retried_until_the_server_is_back(page) -> None:
    """No answer at all (connection refused) is not a final answer: EventSource stays
    CONNECTING and tries again every `retry` ms, and opens once a server listens again."""
    # Only this lesson server runs: its stop() tells the stream to say bye (retry: 200 ms).
    server = LessonServer(create_app(come_back_ms=200), name="b12-refused", grace=3).start()
    port = server.port
    try:
        page.goto(server.url + "/auth")  # any page of the app: the probe opens its own stream
        page.evaluate(PROBE)
        page.wait_for_function("window.probe.opens === 1 && window.probe.numbers.length >= 1")
        server.stop()  # bye with retry: 200, then nothing listens on the port any more
        # One error for the stream that ended, then one per refused attempt: three of them.
        page.wait_for_function("window.probe.errors.length >= 4")
        probe = page.evaluate(
            "({errors: window.probe.errors, state: window.probe.source.readyState})"
        )
        assert probe["state"] == 0, "CONNECTING: the browser is still trying"
        assert set(probe["errors"]) == {0}, "every error left it CONNECTING, never CLOSED"
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/numbers", timeout=5)  # refused: no server, no answer
        server = LessonServer(create_app(), name="b12-refused", port=port).start()
        # The same EventSource, with no code of the page's own, connects again and resumes.
        page.wait_for_function("window.probe.opens === 2 && window.probe.source.readyState === 1")
        page.wait_for_function("window.probe.numbers.length >= 3")
        numbers = page.evaluate("window.probe.numbers")
        assert numbers == list(range(1, len(numbers) + 1)), "Last-Event-ID: no gap, no repeat"
    finally:
        server.stop()
