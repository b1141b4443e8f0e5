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
    raise NotImplementedError("TODO: write test_events_are_framed_numbered_and_end_with_done()")


def test_a_reconnect_misses_nothing_and_repeats_nothing(client: TestClient) -> None:
    # TODO: play a dropped connection on a 4-event feed. Read two events and leave; then
    # reconnect as a browser would, with the id of the last event you got (take it from
    # that event, do not type it), and read to the end. The news ids of both reads together
    # must be exactly 1, 2, 3, 4.
    raise NotImplementedError("TODO: write test_a_reconnect_misses_nothing_and_repeats_nothing()")


def test_a_failing_source_ends_with_one_error_event(client: TestClient) -> None:
    # TODO: make the source fail before event 2 (fail_at=2). What must the client see last,
    # and what must it never see after a failure?
    raise NotImplementedError("TODO: write test_a_failing_source_ends_with_one_error_event()")


def test_an_idle_stream_sends_heartbeats(client: TestClient) -> None:
    # TODO: with a gap of 0.5 s between two events, the raw lines between them must include a
    # comment (a line starting with ":"). Read raw lines: a parser hides comments, and
    # httpx-sse even turns one that follows an id into an empty `message` event, exactly
    # what it makes of an empty `data:` event, which is no heartbeat.
    raise NotImplementedError("TODO: write test_an_idle_stream_sends_heartbeats()")


def test_the_server_is_still_streaming_at_each_news_event(
    feed_app: FastAPI, client: TestClient
) -> None:
    # TODO: read a 3-event feed to its end and, at each news event, note
    # feed_app.state.open_streams. What must the notes say if the server streams, and what
    # if it built the whole body first? (No clock: a buffering server can be just as fast.)
    raise NotImplementedError("TODO: write test_the_server_is_still_streaming_at_each_news_event()")


def test_clients_that_leave_are_cleaned_up(feed_app: FastAPI, live_server) -> None:  # noqa: F811
    # TODO: start the feed on a real server (`live_server(feed_app)`). Connect three
    # clients to a long feed (say count=100, gap=1), read one event on each, then let all
    # three leave (contextlib.ExitStack holds several `with` blocks open). Then wait,
    # bounded (a few seconds at most), for feed_app.state.open_streams to drop to 0, and
    # fail if it does not.
    raise NotImplementedError("TODO: write test_clients_that_leave_are_cleaned_up()")
