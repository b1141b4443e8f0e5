"""Lesson 04: the replay buffer, the Last-Event-ID endpoint and the resumable client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import ModuleType

import httpx
import httpx_sse
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from sse_starlette import EventSourceResponse

from course_app import LessonServer


def test_buffer_numbers_events(exercise: ModuleType) -> None:
    """append() numbers events 1, 2, 3 and since(None) returns them all"""
    buffer = exercise.ReplayBuffer(10)
    assert [buffer.append(d).id for d in "abc"] == [1, 2, 3]
    assert [e.data for e in buffer.since(None)] == ["a", "b", "c"]


def test_buffer_since(exercise: ModuleType) -> None:
    """since(2) returns the events after id 2; since(last id) returns none"""
    buffer = exercise.ReplayBuffer(10)
    for data in "abcde":
        buffer.append(data)
    assert [e.id for e in buffer.since(2)] == [3, 4, 5]
    assert buffer.since(5) == []


def test_buffer_is_bounded_and_reports_gaps(exercise: ModuleType) -> None:
    """the buffer keeps maxlen events; since() an id that fell out is None"""
    buffer = exercise.ReplayBuffer(3)
    for data in "abcdef":
        buffer.append(data)
    assert [e.id for e in buffer.since(None)] == [4, 5, 6]
    assert [e.id for e in buffer.since(3)] == [4, 5, 6]
    assert buffer.since(2) is None


@pytest.fixture
def client(exercise: ModuleType) -> Iterator[TestClient]:
    with TestClient(exercise.create_app(total=10)) as test_client:
        yield test_client


def events(client: TestClient, headers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with httpx_sse.connect_sse(client, "GET", "/events", headers=headers or {}) as source:
        return [(sse.event, sse.id) for sse in source.iter_sse()]


def test_endpoint_sends_everything_then_done(client: TestClient) -> None:
    """a first connection gets events 1..10 with ids, then done"""
    received = events(client)
    assert [i for kind, i in received if kind == "news"] == [str(n) for n in range(1, 11)]
    assert received[-1][0] == "done"


def test_endpoint_replays_after_last_event_id(client: TestClient) -> None:
    """Last-Event-ID: 7 replays 8, 9, 10 and nothing before"""
    received = events(client, {"Last-Event-ID": "7"})
    assert [i for kind, i in received if kind == "news"] == ["8", "9", "10"]


def test_endpoint_204_when_nothing_is_left(client: TestClient) -> None:
    """Last-Event-ID of the last event gets 204, which stops a browser reconnecting"""
    assert client.get("/events", headers={"Last-Event-ID": "10"}).status_code == 204


def test_endpoint_resets_a_client_too_far_behind(exercise: ModuleType) -> None:
    """Last-Event-ID older than the buffer: a reset event, then what the buffer still has"""
    with TestClient(exercise.create_app(total=10, maxlen=3)) as small:
        received = events(small, {"Last-Event-ID": "2"})
    named = [(kind, i) for kind, i in received if kind != "message"]  # skip the retry frame
    assert named == [("reset", ""), ("news", "8"), ("news", "9"), ("news", "10"), ("done", "10")]


def test_endpoint_rejects_a_malformed_last_event_id(client: TestClient) -> None:
    """a Last-Event-ID that is not an event id is a 400, not a traceback"""
    response = client.get("/events", headers={"Last-Event-ID": "../../etc"})
    assert response.status_code == 400


@pytest.fixture
def feed(exercise: ModuleType) -> Iterator[LessonServer]:
    with LessonServer(exercise.create_app(total=10), name="t04-feed") as server:
        yield server


def test_client_resumes_across_drops_exactly_once(exercise: ModuleType, feed: LessonServer) -> None:
    """read_resumable() survives a drop every 3 events: 1..10, each once, in order"""
    sleeps: list[float] = []
    with httpx.Client(timeout=10) as http:
        received = exercise.read_resumable(
            feed.url + "/events?drop_after=3", client=http, sleep=sleeps.append
        )
    assert [i for i, _ in received] == [str(n) for n in range(1, 11)]
    assert json.loads(received[0][1]) == {"headline": "news item 1"}
    assert sleeps == [0.1, 0.1, 0.1], "wait the server's retry (100 ms) before each reconnect"


def test_client_gives_up_on_a_failing_server(exercise: ModuleType) -> None:
    """read_resumable() raises GaveUp after max_failures failures in a row"""
    broken = FastAPI()

    @broken.get("/events")
    async def events_route() -> PlainTextResponse:
        return PlainTextResponse("down for maintenance", status_code=503)

    sleeps: list[float] = []
    with LessonServer(broken, name="t04-broken") as server, httpx.Client(timeout=10) as http:
        with pytest.raises(exercise.GaveUp, match="gave up after 2"):
            exercise.read_resumable(
                server.url + "/events", client=http, max_failures=2, sleep=sleeps.append
            )
    assert len(sleeps) == 2


def test_client_gives_up_when_nothing_listens(exercise: ModuleType) -> None:
    """a refused connection counts as a failure too"""
    with LessonServer(FastAPI(), name="t04-gone") as server:
        url = server.url + "/events"
    with httpx.Client(timeout=2) as http, pytest.raises(exercise.GaveUp):
        exercise.read_resumable(url, client=http, max_failures=1, sleep=lambda _: None)


def test_client_counts_failures_in_a_row_and_honours_retry(
    exercise: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """three drops, each after progress, are not three failures in a row; retry: 250 is 0.25 s"""
    monkeypatch.setattr(exercise, "RETRY_MS", 250)  # a value the client cannot guess
    sleeps: list[float] = []
    with (
        LessonServer(exercise.create_app(total=10), name="t04-retry") as server,
        httpx.Client(timeout=10) as http,
    ):
        received = exercise.read_resumable(
            server.url + "/events?drop_after=3", client=http, max_failures=1, sleep=sleeps.append
        )
    assert [i for i, _ in received] == [str(n) for n in range(1, 11)]
    assert sleeps == [0.25, 0.25, 0.25]


def one_shot_app(*frames: dict) -> FastAPI:
    """Every connection gets these frames, then the stream ends without "done"."""
    app = FastAPI()

    @app.get("/events")
    async def events_route() -> EventSourceResponse:
        async def stream():
            for frame in frames:
                yield frame

        return EventSourceResponse(stream())

    return app


def bounded_sleeps(limit: int = 10) -> tuple[list[float], Callable[[float], None]]:
    """A sleep() that records its delays and fails the test instead of reconnecting forever."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > limit:
            raise AssertionError(f"still reconnecting after {limit} attempts: never gave up")

    return sleeps, sleep


def test_a_hello_is_not_progress(exercise: ModuleType) -> None:
    """a server that sends only retry + a comment, then fails, is given up on"""
    app = one_shot_app({"retry": 100, "comment": "connected"})
    sleeps, sleep = bounded_sleeps()
    with LessonServer(app, name="t04-hello") as server, httpx.Client(timeout=10) as http:
        with pytest.raises(exercise.GaveUp):
            exercise.read_resumable(
                server.url + "/events", client=http, max_failures=2, sleep=sleep
            )
    assert len(sleeps) == 2


def test_a_negative_retry_is_ignored(exercise: ModuleType) -> None:
    """retry: -1 is not a delay: the client keeps a valid one instead of crashing"""
    app = one_shot_app({"retry": -1, "comment": "connected"})
    sleeps, sleep = bounded_sleeps()
    with LessonServer(app, name="t04-negative") as server, httpx.Client(timeout=10) as http:
        with pytest.raises(exercise.GaveUp):
            exercise.read_resumable(
                server.url + "/events", client=http, max_failures=1, sleep=sleep
            )
    assert len(sleeps) == 1 and sleeps[0] >= 0


def test_204_means_stop(exercise: ModuleType) -> None:
    """an HTTP 204 ends reading at once: not a failure, no reconnect"""
    app = FastAPI()

    @app.get("/events", status_code=204)
    async def events_route() -> None:
        return None

    sleeps: list[float] = []
    with LessonServer(app, name="t04-204") as server, httpx.Client(timeout=10) as http:
        assert (
            exercise.read_resumable(server.url + "/events", client=http, sleep=sleeps.append) == []
        )
    assert sleeps == []
