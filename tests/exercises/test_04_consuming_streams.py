"""Lesson 04: the replay buffer, the Last-Event-ID endpoint and the resumable client."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from types import ModuleType

import httpx
import httpx_sse
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.testclient import TestClient
from sse_starlette import EventSourceResponse

from course_app.checking import (  # noqa: F401  (fixtures: one client, one server per module)
    SharedServer,
    loopback_client,
    shared_server,
)
from course_app.runtime import LessonServer

# ---------------------------------------------------------------------------- the buffer


def test_buffer_numbers_events(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """append() numbers events 1, 2, 3 and since(None) returns them all

    Where does append() find the id of the previous event, and what must it update so the
    next call continues from there? What does since(None) mean for a client?
    """
    buffer = exercise.ReplayBuffer(10)
    assert [buffer.append(d).id for d in "abc"] == [1, 2, 3]
    assert [e.data for e in buffer.since(None)] == ["a", "b", "c"]


def test_buffer_since(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """since(2) returns the events after id 2; since(last id) returns none

    Which events have an id greater than the one asked for? What should since() give when
    the client already has the newest event: None, or an empty list?
    """
    buffer = exercise.ReplayBuffer(10)
    for data in "abcde":
        buffer.append(data)
    assert [e.id for e in buffer.since(2)] == [3, 4, 5]
    assert buffer.since(5) == []


def test_buffer_is_bounded_and_reports_gaps(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """the buffer keeps maxlen events; since() an id that fell out is None

    After since(3) the client needs event 4 first: is it still in the buffer? After
    since(2) it needs event 3: compare that with the oldest id the buffer still holds.
    """
    buffer = exercise.ReplayBuffer(3)
    for data in "abcdef":
        buffer.append(data)
    assert [e.id for e in buffer.since(None)] == [4, 5, 6]
    assert [e.id for e in buffer.since(3)] == [4, 5, 6]
    assert buffer.since(2) is None


# -------------------------------------------------------------- the endpoint (given code)


@pytest.fixture(scope="module")
def client(exercise: ModuleType) -> Iterator[TestClient]:
    # The endpoint only reads the buffer its startup filled: one app serves the module.
    with TestClient(exercise.create_app(total=10)) as test_client:
        yield test_client


def events(client: TestClient, headers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with httpx_sse.connect_sse(client, "GET", "/events", headers=headers or {}) as source:
        return [(sse.event, sse.id) for sse in source.iter_sse()]


def test_endpoint_sends_everything_then_done(client: TestClient) -> None:
    """a first connection gets events 1..10 with ids, then done

    The endpoint is given: it fills the buffer with append() at startup and reads it with
    since(). If this fails, look at those two first.
    """
    received = events(client)
    assert [i for kind, i in received if kind == "news"] == [str(n) for n in range(1, 11)]
    assert received[-1][0] == "done"


def test_endpoint_replays_after_last_event_id(client: TestClient) -> None:
    """Last-Event-ID: 7 replays 8, 9, 10 and nothing before

    The endpoint turns the header into since(7): does your since() leave out event 7
    itself, and everything before it?
    """
    received = events(client, {"Last-Event-ID": "7"})
    assert [i for kind, i in received if kind == "news"] == ["8", "9", "10"]


def test_endpoint_204_when_nothing_is_left(client: TestClient) -> None:
    """Last-Event-ID of the last event gets 204, which stops a browser reconnecting

    The endpoint compares the header with the buffer's last_id: does append() keep
    last_id up to date?
    """
    assert client.get("/events", headers={"Last-Event-ID": "10"}).status_code == 204


def test_endpoint_resets_a_client_too_far_behind(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """Last-Event-ID older than the buffer: a reset event, then what the buffer still has

    The endpoint sends `reset` when since() returns None. With maxlen=3 and ten events,
    which ids are left, and can a client that has only events 1 and 2 catch up?
    """
    with TestClient(exercise.create_app(total=10, maxlen=3)) as small:
        received = events(small, {"Last-Event-ID": "2"})
    named = [(kind, i) for kind, i in received if kind != "message"]  # skip the retry frame
    assert named == [("reset", ""), ("news", "8"), ("news", "9"), ("news", "10"), ("done", "10")]


def test_endpoint_rejects_a_malformed_last_event_id(client: TestClient) -> None:
    """a Last-Event-ID that is not an event id is a 400, not a traceback

    The endpoint is given; it needs a working buffer to start. Anything but a short run of
    ASCII digits is refused before int() can fail on it.
    """
    for bad in ("../../etc", "9" * 5000):
        assert client.get("/events", headers={"Last-Event-ID": bad}).status_code == 400


# ----------------------------------------------------------------------- the client


@pytest.fixture(scope="module")
def feed(exercise: ModuleType) -> Iterator[LessonServer]:
    # Its own server: the app fills its buffer at startup. It only reads it afterwards, and
    # reads RETRY_MS per request, so one feed serves every test that needs it.
    with LessonServer(exercise.create_app(total=10), name="t04-feed") as server:
        yield server


@pytest.fixture
def http(loopback_client: httpx.Client) -> httpx.Client:  # noqa: F811
    return loopback_client


@pytest.fixture
def serve(shared_server: SharedServer) -> Callable[[FastAPI], str]:  # noqa: F811
    """serve(app) puts a test's scripted app on the module's server; returns its /events URL."""
    return lambda app: shared_server.plug(app).url + "/events"


def test_client_resumes_across_drops_exactly_once(
    exercise: ModuleType, feed: LessonServer, http: httpx.Client
) -> None:
    """read_resumable() survives a drop every 3 events: 1..10, each once, in order

    After a drop, which header tells the server where you stopped, and which id goes in it?
    How long do you wait before reconnecting: which field of the stream says so?
    """
    sleeps: list[float] = []
    received = exercise.read_resumable(
        feed.url + "/events?drop_after=3", client=http, sleep=sleeps.append
    )
    assert [i for i, _ in received] == [str(n) for n in range(1, 11)]
    assert json.loads(received[0][1]) == {"headline": "news item 1"}
    assert sleeps == [0.1, 0.1, 0.1], "wait the server's retry (100 ms) before each reconnect"


def scripted(*answers: Callable[[], Response]) -> tuple[FastAPI, list[str | None]]:
    """An app whose n-th connection gets answers[n] (the last one again after the end).

    Also returns the Last-Event-ID header of each connection (None when absent), so a test
    can count the attempts.
    """
    app = FastAPI()
    headers: list[str | None] = []

    @app.get("/events", response_model=None)
    async def events_route(request: Request) -> Response:
        headers.append(request.headers.get("last-event-id"))
        return answers[min(len(headers), len(answers)) - 1]()

    return app, headers


def sse(*frames: dict, status: int = 200) -> Callable[[], Response]:
    """An answer: these frames as an event stream, which then ends without "done"."""

    def answer() -> Response:
        async def stream():
            for frame in frames:
                yield frame

        return EventSourceResponse(stream(), status_code=status)

    return answer


def plain(status: int, text: str = "") -> Callable[[], Response]:
    """An answer: a plain-text response with this status."""
    return lambda: PlainTextResponse(text, status_code=status)


def news(*ids: int) -> list[dict]:
    return [{"id": str(i), "event": "news", "data": f"item {i}"} for i in ids]


DONE = {"event": "done", "data": "{}"}


def bounded_sleeps(limit: int = 10) -> tuple[list[float], Callable[[float], None]]:
    """A sleep() that records its delays and fails the test instead of reconnecting forever."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > limit:
            raise AssertionError(f"still reconnecting after {limit} attempts: never gave up")

    return sleeps, sleep


def test_client_gives_up_on_a_failing_server(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """max_failures=2 against a server that always answers 503: two attempts, then GaveUp

    When do you raise: once the count of failures in a row REACHES max_failures. How many
    waits are there between two attempts, and does the message say how many attempts failed?
    """
    app, attempts = scripted(plain(503, "down for maintenance"))
    sleeps, sleep = bounded_sleeps()
    url = serve(app)
    with pytest.raises(exercise.GaveUp, match="gave up after 2 failed attempts in a row"):
        exercise.read_resumable(url, client=http, max_failures=2, sleep=sleep)
    assert len(attempts) == 2, "max_failures=2: exactly two attempts"
    assert len(sleeps) == 1, "one wait between the two attempts, none after the last"


def test_client_gives_up_when_nothing_listens(exercise: ModuleType, http: httpx.Client) -> None:
    """a refused connection is a failed attempt too

    What does httpx raise when nothing listens on the port? Which exception class covers
    refused, reset and timed-out connections alike?
    """
    sleeps, sleep = bounded_sleeps()
    # A port bound but not listening refuses every connection, and no other program can
    # take it while the test runs.
    with socket.socket() as unused, pytest.raises(exercise.GaveUp):
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/events"
        exercise.read_resumable(url, client=http, max_failures=2, sleep=sleep)
    assert len(sleeps) == 1


def test_client_counts_failures_in_a_row_and_honours_retry(
    exercise: ModuleType, feed: LessonServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """three drops, each after new events, are not failed attempts; retry: 250 is 0.25 s

    With max_failures=1 the first failed attempt gives up: so an attempt that brought new
    events before the drop must not count. Do you wait the server's retry, in seconds?
    """
    monkeypatch.setattr(exercise, "RETRY_MS", 250)  # a value the client cannot guess
    sleeps: list[float] = []
    received = exercise.read_resumable(
        feed.url + "/events?drop_after=3", client=http, max_failures=1, sleep=sleeps.append
    )
    assert [i for i, _ in received] == [str(n) for n in range(1, 11)]
    assert sleeps == [0.25, 0.25, 0.25]


def test_a_hello_is_not_progress(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """a server that sends only retry + a comment, then ends, is given up on

    httpx-sse hands you the retry frame as an event with no id and no data. Does your
    client count it as progress? Only an event with an id you had not seen is.
    """
    app, attempts = scripted(sse({"retry": 100, "comment": "connected"}))
    sleeps, sleep = bounded_sleeps()
    url = serve(app)
    with pytest.raises(exercise.GaveUp):
        exercise.read_resumable(url, client=http, max_failures=2, sleep=sleep)
    assert len(attempts) == 2
    assert sleeps == [0.1]


def test_a_negative_retry_is_ignored(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """retry: -1 is not a delay: the client keeps the last valid one (250 ms here)

    httpx-sse turns "retry: -1" into the number -1. What does the SSE standard say about a
    retry value that is not all digits, and which delay do you use instead?
    """
    app, _ = scripted(sse({"retry": 250, "comment": "hello"}, {"retry": -1, "comment": "bad"}))
    sleeps, sleep = bounded_sleeps()
    url = serve(app)
    with pytest.raises(exercise.GaveUp):
        exercise.read_resumable(url, client=http, max_failures=2, sleep=sleep)
    assert sleeps == [0.25]


def test_retry_0_means_reconnect_at_once(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """retry: 0 is a valid delay: reconnect at once, sleep(0), not the default wait

    0 is falsy in Python: does `if sse.retry:` tell "no retry field" apart from "retry: 0"?
    """
    app, _ = scripted(sse({"retry": 0, "comment": "hello"}))
    sleeps, sleep = bounded_sleeps()
    url = serve(app)
    with pytest.raises(exercise.GaveUp):
        exercise.read_resumable(url, client=http, max_failures=2, sleep=sleep)
    assert sleeps == [0]


def test_204_means_stop(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """an HTTP 204 ends reading at once: not a failure, no reconnect

    Which status do you look at, and where, before you start reading events?
    """
    app, attempts = scripted(plain(204))
    sleeps: list[float] = []
    url = serve(app)
    assert exercise.read_resumable(url, client=http, sleep=sleeps.append) == []
    assert (len(attempts), sleeps) == (1, [])


def test_an_error_status_is_a_failure_even_with_events(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """a 503 whose body is an event stream is a failed attempt: its events are not read

    httpx-sse parses any text/event-stream body, whatever the status, and its SSEError is
    an httpx.TransportError. Do you check for 200 yourself before calling iter_sse()?
    """
    app, attempts = scripted(sse({"retry": 0}, *news(99), DONE, status=503), sse(*news(1, 2), DONE))
    sleeps, sleep = bounded_sleeps()
    url = serve(app)
    received = exercise.read_resumable(url, client=http, sleep=sleep)
    assert [i for i, _ in received] == ["1", "2"], "the 503's events must not be collected"
    assert (len(attempts), len(sleeps)) == (2, 1)


def test_a_client_error_gives_up_at_once(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """a 404 raises GaveUp at once, without retrying; a 429 (too many requests) is retried

    Will asking again change a 404 or a 401? Which 4xx status asks the client to come back
    later? Put the status in GaveUp's message, so the reader knows what went wrong.
    """
    missing, attempts = scripted(plain(404, "no such feed"))
    sleeps, sleep = bounded_sleeps()
    url = serve(missing)
    with pytest.raises(exercise.GaveUp, match="404"):
        exercise.read_resumable(url, client=http, sleep=sleep)
    assert (len(attempts), sleeps) == (1, [])

    busy, attempts = scripted(plain(429, "slow down"), sse(*news(1), DONE))
    sleeps, sleep = bounded_sleeps()
    url = serve(busy)
    received = exercise.read_resumable(url, client=http, sleep=sleep)
    assert [i for i, _ in received] == ["1"]
    assert (len(attempts), len(sleeps)) == (2, 1)


def test_events_already_seen_are_skipped(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """a server that ignores Last-Event-ID replays 1-3 again: each event is collected once

    A server may replay events you already have (it lost its place, or ignores the
    header). How do you remember which ids you have seen, across connections?
    """
    replay = sse({"retry": 0}, *news(1, 2, 3))
    app, attempts = scripted(replay, replay, sse(*news(1, 2, 3, 4, 5), DONE))
    sleeps, sleep = bounded_sleeps()
    url = serve(app)
    received = exercise.read_resumable(url, client=http, sleep=sleep)
    assert [i for i, _ in received] == ["1", "2", "3", "4", "5"]
    assert attempts == [None, "3", "3"], "send the id of the newest event you received"
    assert sleeps == [0, 0]


def test_replayed_events_are_not_progress(
    exercise: ModuleType, serve: Callable[[FastAPI], str], http: httpx.Client
) -> None:
    """a server that replays 1-3 and drops, forever: replays are not progress, GaveUp follows

    The second connection brings ids 1, 2, 3 again: nothing new. Does your client reset
    its count of failures on any event with an id, or only on an id it had not seen?
    """
    app, attempts = scripted(sse({"retry": 0}, *news(1, 2, 3)))
    sleeps, sleep = bounded_sleeps()
    url = serve(app)
    with pytest.raises(exercise.GaveUp, match="gave up after 2 failed attempts in a row"):
        exercise.read_resumable(url, client=http, max_failures=2, sleep=sleep)
    # The first attempt brought 1-3 (progress); the next two brought nothing new.
    assert (len(attempts), len(sleeps)) == (3, 2)
