"""Lesson 00 warm-up: countdown() and the /countdown stream."""

import inspect
from types import ModuleType

import pytest
from fastapi.testclient import TestClient


def test_countdown_from_three(exercise: ModuleType) -> None:
    """countdown(3) yields 3, 2, 1, liftoff"""
    assert list(exercise.countdown(3)) == ["3", "2", "1", "liftoff"]


def test_countdown_from_zero(exercise: ModuleType) -> None:
    """countdown(0) yields only liftoff"""
    assert list(exercise.countdown(0)) == ["liftoff"]


def test_countdown_rejects_negative_start(exercise: ModuleType) -> None:
    """countdown(-1) raises ValueError"""
    with pytest.raises(ValueError):
        list(exercise.countdown(-1))


def test_countdown_is_lazy(exercise: ModuleType) -> None:
    """countdown is a generator: it yields one item at a time"""
    items = exercise.countdown(1000)
    assert inspect.isgenerator(items), "use yield, so items are produced one at a time"
    assert next(items) == "1000"


def test_countdown_stream_on_the_wire(exercise: ModuleType) -> None:
    """GET /countdown?start=2 streams three SSE events"""
    with TestClient(exercise.app) as client:
        with client.stream("GET", "/countdown", params={"start": 2}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            data = [line for line in response.iter_lines() if line.startswith("data:")]
    assert data == ["data: 2", "data: 1", "data: liftoff"]


def test_countdown_stream_rejects_bad_start(exercise: ModuleType) -> None:
    """GET /countdown?start=-5 is a 422, not a broken stream"""
    with TestClient(exercise.app) as client:
        assert client.get("/countdown", params={"start": -5}).status_code == 422
