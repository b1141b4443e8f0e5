"""Lesson 12's middleware claims, on a real server: what each middleware does to a stream.

- ``StreamTiming`` (pure ASGI) records a stream when it ends: status, bytes, and whether it
  completed or its client left; the typical ``@app.middleware("http")`` logs when the
  headers are ready, before the stream has sent anything.
- A middleware that reads ``response.body_iterator`` holds the whole body: one chunk, late;
  an endless stream never gets an answer.
- Disconnects: the stream's own cleanup runs behind every middleware, but
  ``request.is_disconnected()`` never turns true behind a ``BaseHTTPMiddleware``
  (Starlette 1.10).

Every verdict is an order of events or a count, never a duration.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from course_app.demos.stream_middleware import MIDDLEWARES, create_app
from course_app.runtime import LessonServer, inspect_stream
from course_app.streams import StreamRecord, StreamTiming


def wait_for(condition: Callable[[], object], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def leave_after_two_events(url: str) -> None:
    with httpx.stream("GET", url, timeout=10) as response:
        for line in response.iter_lines():
            if line == "data: event 2":
                return


def test_stream_timing_records_a_finished_stream_when_it_ends() -> None:
    app = create_app("asgi")
    with LessonServer(app) as server:
        capture = inspect_stream(server.url + "/story?count=3", split="chunks")
        assert wait_for(lambda: app.state.records)
    (record,) = app.state.records
    body = b"".join(frame.data for frame in capture.frames)
    assert (record.method, record.path, record.status, record.ended) == (
        "GET",
        "/story",
        200,
        "complete",
    )
    assert record.body_bytes == len(body) == len(b"id: 1\ndata: event 1\n\n") * 3
    assert record.first_byte is not None and record.first_byte <= record.duration
    # Written after the stream ended, so the line can say how it ended.
    assert app.state.events == ["stream ended", "cleanup", "logged: 200, complete"]


def test_the_typical_timing_middleware_logs_before_the_stream_sends_anything() -> None:
    app = create_app("timing")
    with LessonServer(app) as server:
        inspect_stream(server.url + "/story?count=3")
        assert wait_for(lambda: "cleanup" in app.state.events)
    assert [event.split(":")[0] for event in app.state.events] == [
        "logged",
        "stream ended",
        "cleanup",
    ]


@pytest.mark.parametrize("middleware", ["none", "timing", "asgi"])
def test_a_leaving_client_ends_the_stream_behind_each_middleware(middleware: str) -> None:
    app = create_app(middleware)  # type: ignore[arg-type]
    with LessonServer(app) as server:
        leave_after_two_events(server.url + "/ticks")

        def cleaned_up() -> bool:
            # Behind @app.middleware("http") the cancellation can catch the generator
            # suspended at its `yield`, held in a reference cycle: its `finally` then runs at
            # the next collection (as behind "body-log", below; seen once in ~10 full runs).
            # Without that middleware it must run at once: no collecting for them.
            if middleware == "timing" and app.state.cleanups < 1:
                gc.collect()
            return app.state.cleanups == 1

        assert wait_for(cleaned_up), (
            f"behind {middleware!r} the generator's finally never ran after the client left"
        )
        if middleware == "asgi":
            assert wait_for(lambda: app.state.records)
            assert app.state.records[0].ended == "client left"


def test_a_body_logging_middleware_holds_the_whole_stream() -> None:
    app = create_app("body-log")
    with LessonServer(app) as server:
        capture = inspect_stream(server.url + "/story?count=8", split="chunks")
        assert len(capture.frames) == 1  # everything at once, at the end
        assert app.state.held == [len(capture.frames[0].data)]
        assert app.state.events[-1].startswith("logged")  # after "stream ended"
        with pytest.raises(httpx.ReadTimeout):  # an endless stream: no answer at all
            httpx.get(server.url + "/ticks", timeout=0.5)
        assert app.state.produced > 8  # it kept producing, into the middleware's memory

        # ...until the client left. Then the generator's `finally` runs at once, or, in about
        # one run in ten (the cancellation caught it suspended at its `yield`, held in a
        # reference cycle), only when it is garbage collected: so collect while waiting.
        def cleaned_up() -> bool:
            if app.state.cleanups < 2:
                gc.collect()
            return app.state.cleanups == 2

        assert wait_for(cleaned_up)


@pytest.mark.parametrize(
    ("middleware", "verdict"),
    [("none", "client left"), ("asgi", "client left"), ("timing", "gave up waiting")],
)
def test_is_disconnected_behind_each_middleware(middleware: str, verdict: str) -> None:
    app = create_app(middleware, queue_wait=2.0)  # type: ignore[arg-type]
    with LessonServer(app) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(server.url + "/queued", timeout=0.2)
        assert wait_for(lambda: app.state.queued, seconds=8)
    assert app.state.queued == [verdict]


def test_create_app_names_the_middlewares_it_knows() -> None:
    with pytest.raises(ValueError, match="middleware must be one of"):
        create_app("gzip")  # type: ignore[arg-type]
    assert MIDDLEWARES == ("none", "timing", "body-log", "asgi")


def test_stream_timing_logs_a_line_without_a_list(caplog: pytest.LogCaptureFixture) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.get("/hi")(lambda: {"hi": 1})
    app.add_middleware(StreamTiming)
    with caplog.at_level(logging.INFO, logger="lesson.stream_timing"):
        assert TestClient(app).get("/hi").status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lesson.stream_timing"]
    assert line.startswith("GET /hi 200 first byte ") and line.endswith(", 8 bytes, complete")


def test_stream_record_line_without_a_body() -> None:
    record = StreamRecord("GET", "/x", status=None, duration=0.0123, ended="error")
    assert record.line() == "GET /x - first byte -, total 12 ms, 0 bytes, error"
