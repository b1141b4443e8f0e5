"""Lesson 11 exercise: write the tests that catch real streaming bugs.

The app under test is the news feed in ``course_app/demos/news_feed.py`` (read its docstring):
``GET /feed?count=N&gap=S&fail_at=K`` streams ``news`` events with ids 1..N, sends a
``: ping`` comment for every 0.1 s of a longer gap, resumes after ``Last-Event-ID``, and
ends with one ``done`` event, or one ``error`` event when the source fails.

``course check 11`` runs your tests twice over:
1. against the correct feed: every test must pass;
2. against eight copies of the feed, each with one planted bug
   (``course_app.demos.news_feed.BUGS``): each bug must make at least one of your tests fail.

Try them yourself: ``pytest exercises/11_testing_streams.py``, and against one bug:
``COURSE_FEED_BUG=no_heartbeat pytest exercises/11_testing_streams.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import httpx_sse
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from course_app.checking import live_server  # noqa: F401  (a fixture: see lesson 11)
from course_app.demos.news_feed import create_app

BUG_ENV = "COURSE_FEED_BUG"


@pytest.fixture
def feed_app() -> FastAPI:
    """The app under test: the correct feed, or the one with the bug the checker planted."""
    return create_app(bug=os.environ.get(BUG_ENV) or None)


@pytest.fixture
def client(feed_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(feed_app) as test_client:
        yield test_client


def test_events_are_framed_numbered_and_end_with_done(client: TestClient) -> None:
    # TODO: GET /feed?count=3 and parse it with an SSE parser (httpx_sse.connect_sse works
    # with a TestClient). Assert the exact list of (event, id) pairs: three news events with
    # ids 1, 2, 3, then done. The done event has no `id:` line: a parser (and a browser)
    # reports the last id it saw for it, so expect ("done", "3").
    ### BEGIN SOLUTION
    with httpx_sse.connect_sse(client, "GET", "/feed", params={"count": 3}) as source:
        got = [(sse.event, sse.id) for sse in source.iter_sse()]
    assert got == [("news", "1"), ("news", "2"), ("news", "3"), ("done", "3")]
    ### END SOLUTION


def test_a_reconnect_misses_nothing_and_repeats_nothing(client: TestClient) -> None:
    # TODO: play a dropped connection on a 4-event feed. Read two events and leave; then
    # reconnect as a browser would, with the id of the last event you got (take it from
    # that event, do not type it), and read to the end. The news ids of both reads together
    # must be exactly 1, 2, 3, 4.
    ### BEGIN SOLUTION
    params = {"count": 4}
    with httpx_sse.connect_sse(client, "GET", "/feed", params=params) as source:
        events = source.iter_sse()
        before = [next(events), next(events)]  # the connection drops here
    headers = {"Last-Event-ID": before[-1].id}
    with httpx_sse.connect_sse(client, "GET", "/feed", params=params, headers=headers) as source:
        after = list(source.iter_sse())
    assert [sse.id for sse in before + after if sse.event == "news"] == ["1", "2", "3", "4"]
    ### END SOLUTION


def test_a_failing_source_ends_with_one_error_event(client: TestClient) -> None:
    # TODO: make the source fail before event 2 (fail_at=2). What must the client see last,
    # and what must it never see after a failure?
    ### BEGIN SOLUTION
    params = {"count": 3, "fail_at": 2}
    with httpx_sse.connect_sse(client, "GET", "/feed", params=params) as source:
        kinds = [sse.event for sse in source.iter_sse()]
    assert kinds == ["news", "error"]
    ### END SOLUTION


def test_an_idle_stream_sends_heartbeats(client: TestClient) -> None:
    # TODO: with a gap of 0.5 s between two events, the raw lines between them must include a
    # comment (a line starting with ":"). Read raw lines: a parser hides comments, and
    # httpx-sse even turns one that follows an id into an empty `message` event, exactly
    # what it makes of an empty `data:` event, which is no heartbeat.
    ### BEGIN SOLUTION
    with client.stream("GET", "/feed", params={"count": 2, "gap": 0.5}) as response:
        lines = list(response.iter_lines())
    first, second = (i for i, line in enumerate(lines) if line.startswith("event: news"))
    assert any(line.startswith(":") for line in lines[first:second])
    ### END SOLUTION


def test_the_server_is_still_streaming_at_each_news_event(
    feed_app: FastAPI, client: TestClient
) -> None:
    # TODO: read a 3-event feed to its end and, at each news event, note
    # feed_app.state.open_streams. What must the notes say if the server streams, and what
    # if it built the whole body first? (No clock: a buffering server can be just as fast.)
    ### BEGIN SOLUTION
    open_at_each_news = []
    with httpx_sse.connect_sse(client, "GET", "/feed", params={"count": 3}) as source:
        for sse in source.iter_sse():
            if sse.event == "news":
                open_at_each_news.append(feed_app.state.open_streams)
    assert open_at_each_news == [1, 1, 1]
    ### END SOLUTION


def test_clients_that_leave_are_cleaned_up(feed_app: FastAPI, live_server) -> None:  # noqa: F811
    # TODO: start the feed on a real server (`live_server(feed_app)`). Connect three
    # clients to a long feed (say count=100, gap=1), read one event on each, then let all
    # three leave (contextlib.ExitStack holds several `with` blocks open). Then wait,
    # bounded (a few seconds at most), for feed_app.state.open_streams to drop to 0, and
    # fail if it does not.
    ### BEGIN SOLUTION
    server = live_server(feed_app)
    params = {"count": 100, "gap": 1}
    with httpx.Client(timeout=5) as http, ExitStack() as streams:
        for _ in range(3):
            source = streams.enter_context(
                httpx_sse.connect_sse(http, "GET", f"{server.url}/feed", params=params)
            )
            assert next(source.iter_sse()).event == "news"
    deadline = time.monotonic() + 5
    while feed_app.state.open_streams and time.monotonic() < deadline:
        time.sleep(0.01)
    assert feed_app.state.open_streams == 0, "streams whose clients left are still open"
    ### END SOLUTION
