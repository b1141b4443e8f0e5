"""Lesson 00 warm-up: countdown() and the /countdown stream."""

import inspect
from types import ModuleType

import pytest
from fastapi.testclient import TestClient


def test_countdown_from_three(exercise: ModuleType) -> None:
    """countdown(3) yields 3, 2, 1, liftoff

    Which numbers must the loop visit, in which order, and where does it stop? Are the
    items numbers or strings? What comes once the loop is over?
    """
    assert list(exercise.countdown(3)) == ["3", "2", "1", "liftoff"]


def test_countdown_from_zero(exercise: ModuleType) -> None:
    """countdown(0) yields only liftoff

    With start=0, how many times should the loop run? Is "liftoff" yielded inside the
    loop or after it?
    """
    assert list(exercise.countdown(0)) == ["liftoff"]


def test_countdown_rejects_negative_start(exercise: ModuleType) -> None:
    """countdown(-1) raises ValueError

    Which line has to run before the first `yield` so that a negative start fails
    instead of producing anything? Which exception type does the test expect?
    """
    with pytest.raises(ValueError):
        list(exercise.countdown(-1))


def test_countdown_is_lazy(exercise: ModuleType) -> None:
    """countdown is a generator: it yields one item at a time

    Does your function build a whole list and return it? With `yield` in its body,
    countdown(1000) hands out "1000" at once, without computing the other 1000 items.
    """
    items = exercise.countdown(1000)
    assert inspect.isgenerator(items), "use yield, so items are produced one at a time"
    assert next(items) == "1000"


def test_countdown_stream_on_the_wire(exercise: ModuleType) -> None:
    """GET /countdown?start=2 streams three SSE events

    The route sends whatever countdown() yields, one event per item: what does
    `list(countdown(2))` give in a Python shell? Try `course serve 00`, then
    `curl -N "http://127.0.0.1:8000/countdown?start=2"`.
    """
    with TestClient(exercise.app) as client:
        with client.stream("GET", "/countdown", params={"start": 2}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            data = [line for line in response.iter_lines() if line.startswith("data:")]
    assert data == ["data: 2", "data: 1", "data: liftoff"]


def test_countdown_stream_rejects_bad_start(exercise: ModuleType) -> None:
    """GET /countdown?start=-5 is a 422, not a broken stream

    This check passes before you write anything: FastAPI validates `start` before the
    stream begins. If it fails, what happened to the `Query(ge=0, ...)` on the route?
    """
    with TestClient(exercise.app) as client:
        assert client.get("/countdown", params={"start": -5}).status_code == 422
