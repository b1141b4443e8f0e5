"""Lesson 11 exercise: write the tests that catch real streaming bugs.

The app under test is the news feed in ``course_app/news_feed.py`` (read its docstring):
``GET /feed?count=N&gap=S&fail_at=K`` streams ``news`` events with ids 1..N, sends a
``: ping`` comment every 0.1 s while idle, resumes after ``Last-Event-ID``, and ends with
one ``done`` event, or one ``error`` event when the source fails.

``course check 11`` runs your tests twice over:
1. against the correct feed: every test must pass;
2. against seven copies of the feed, each with one planted bug
   (``course_app.news_feed.BUGS``): each bug must make at least one of your tests fail.

Try them yourself: ``pytest exercises/11_testing_streams.py``, and against one bug:
``COURSE_FEED_BUG=no_heartbeat pytest exercises/11_testing_streams.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import httpx_sse
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from course_app.live_server import live_server  # noqa: F401  (a fixture: see lesson 11)
from course_app.news_feed import create_app

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
    # ids 1, 2, 3, then done.
    raise NotImplementedError("TODO: write test_events_are_framed_numbered_and_end_with_done()")


def test_last_event_id_resumes_after_that_event(client: TestClient) -> None:
    # TODO: reconnect as a browser would after event 2 of 4: which events must come, and
    # which must not come again?
    raise NotImplementedError("TODO: write test_last_event_id_resumes_after_that_event()")


def test_a_failing_source_ends_with_one_error_event(client: TestClient) -> None:
    # TODO: make the source fail before event 2 (fail_at=2). What must the client see last,
    # and what must it never see after a failure?
    raise NotImplementedError("TODO: write test_a_failing_source_ends_with_one_error_event()")


def test_an_idle_stream_sends_heartbeats(client: TestClient) -> None:
    # TODO: with a gap of 0.5 s between two events, the raw lines between them must include a
    # comment (a line starting with ":"). An SSE parser drops comments: read raw lines.
    raise NotImplementedError("TODO: write test_an_idle_stream_sends_heartbeats()")


def test_the_first_event_arrives_while_the_stream_is_still_open(
    feed_app: FastAPI, client: TestClient
) -> None:
    # TODO: read the first event of a 3-event feed and, before reading on, look at
    # feed_app.state.open_streams. What does it say if the server streams, and if it built
    # the whole body first? (No clocks needed.) Keep the iterator in a variable while you
    # read: `next(source.iter_sse())` drops it at once, and that closes the response.
    raise NotImplementedError("TODO: write test_the_first_event_arrives_while_the_stream_is_still_open()")


def test_a_client_that_leaves_is_cleaned_up(feed_app: FastAPI, live_server) -> None:  # noqa: F811
    # TODO: start the feed on a real server (`live_server(feed_app)`), read one event of a
    # long feed over real HTTP, leave, then wait (bounded: a few seconds at most) for
    # feed_app.state.open_streams to drop back to 0. Fail if it does not.
    raise NotImplementedError("TODO: write test_a_client_that_leaves_is_cleaned_up()")
