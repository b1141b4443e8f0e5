"""Lesson 06: safe_events() ends every stream exactly once, safely, and closes its source."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import httpx
import httpx_sse
import pytest
from fastapi.testclient import TestClient

from task_helpers import cancel_and_wait

Event = dict[str, Any]


class Source:
    """A test source that records whether it was closed."""

    def __init__(
        self,
        count: int,
        *,
        fail_at: int | None = None,
        hang_at: int | None = None,
        delay: float = 0,
    ) -> None:
        self.count, self.fail_at, self.hang_at, self.delay = count, fail_at, hang_at, delay
        self.closed = False

    async def events(self) -> AsyncIterator[Event]:
        try:
            for number in range(self.count):
                if number == self.fail_at:
                    raise RuntimeError("password=hunter2 at db.internal")
                if number == self.hang_at:
                    await asyncio.Event().wait()
                yield {"event": "row", "data": str(number)}
                await asyncio.sleep(self.delay)
        finally:
            self.closed = True


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def kinds(events: list[Event]) -> list[str]:
    return [event.get("event", "message") for event in events]


def test_normal_end_gives_exactly_one_done(exercise: ModuleType) -> None:
    """the source's events, then exactly one done"""
    source = Source(3)
    events = asyncio.run(collect(exercise.safe_events(source.events(), item_timeout=5)))
    assert kinds(events) == ["row", "row", "row", "done"]
    assert source.closed


def test_exception_becomes_one_error_event(exercise: ModuleType) -> None:
    """an exception mid-stream becomes one error event, after the events so far"""
    source = Source(5, fail_at=2)
    events = asyncio.run(collect(exercise.safe_events(source.events(), item_timeout=5)))
    assert kinds(events) == ["row", "row", "error"]
    payload = json.loads(events[-1]["data"])
    assert payload["code"] == "internal" and payload["retryable"] is False
    assert source.closed


def test_error_event_leaks_no_internals(
    exercise: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """the error event hides the exception's text; the server log keeps it"""
    source = Source(5, fail_at=0)
    with caplog.at_level(logging.INFO):
        events = asyncio.run(collect(exercise.safe_events(source.events(), item_timeout=5)))
    wire = json.dumps(events)
    for secret in ("hunter2", "db.internal", "RuntimeError", "Traceback"):
        assert secret not in wire
    assert "hunter2" in caplog.text, "log the exception (logger.exception) so it can be fixed"


def test_stalled_source_times_out(exercise: ModuleType) -> None:
    """a source that stops answering gets a timeout error event, and is closed"""
    source = Source(5, hang_at=1)
    events = asyncio.run(collect(exercise.safe_events(source.events(), item_timeout=0.05)))
    assert kinds(events) == ["row", "error"]
    payload = json.loads(events[-1]["data"])
    assert payload["code"] == "timeout" and payload["retryable"] is True
    assert source.closed


def test_the_timeout_is_per_item_not_per_stream(exercise: ModuleType) -> None:
    """a slow but steady source is no stall: the timeout bounds each row, not the whole stream"""
    source = Source(15, delay=0.05)  # 0.75 s in all, each row well within 0.5 s
    events = asyncio.run(collect(exercise.safe_events(source.events(), item_timeout=0.5)))
    assert kinds(events) == ["row"] * 15 + ["done"]


def test_client_leaving_closes_the_source_and_yields_nothing_more(exercise: ModuleType) -> None:
    """when the consumer leaves, the source is closed and nothing more is yielded"""

    async def main() -> tuple[list[Event], bool]:
        source = Source(100)
        stream = exercise.safe_events(source.events(), item_timeout=5)
        received = [await anext(stream)]
        await stream.aclose()  # raises RuntimeError if the wrapper yields while closing
        return received, source.closed

    received, closed = asyncio.run(main())
    assert kinds(received) == ["row"]
    assert closed


def test_cancellation_propagates_and_closes_the_source(exercise: ModuleType) -> None:
    """cancelling the consuming task cancels it for real, and closes the source"""

    async def main() -> tuple[bool, bool]:
        source = Source(5, hang_at=1)
        task = asyncio.create_task(collect(exercise.safe_events(source.events(), item_timeout=30)))
        for _ in range(20):
            await asyncio.sleep(0)
        return await cancel_and_wait(task), source.closed

    cancelled, closed = asyncio.run(main())
    assert cancelled, "CancelledError was swallowed"
    assert closed


@pytest.fixture
def client(exercise: ModuleType) -> TestClient:
    return TestClient(exercise.app)


def expect_200(client: TestClient, url: str, response: httpx.Response) -> None:
    if response.status_code != 200:
        response.read()
        client.get(url)  # not a stream: re-raises the endpoint's exception, if it raised one
        raise AssertionError(f"GET {url} answered {response.status_code}, expected 200")


def stream_events(client: TestClient, url: str) -> list[tuple[str, str]]:
    with httpx_sse.connect_sse(client, "GET", url) as source:
        expect_200(client, url, source.response)
        return [(event.event, event.data) for event in source.iter_sse()]


def test_endpoint_ends_with_done(client: TestClient) -> None:
    """GET /reports/daily/stream: six rows, then done"""
    events = stream_events(client, "/reports/daily/stream")
    assert [kind for kind, _ in events] == ["row"] * 6 + ["done"]


def test_endpoint_reports_a_failure_as_an_event(client: TestClient) -> None:
    """a failure after the first byte is a 200 whose last event is error"""
    events = stream_events(client, "/reports/daily/stream?fail_at=2")
    assert [kind for kind, _ in events] == ["row", "row", "error"]
    assert json.loads(events[-1][1])["code"] == "internal"


def test_endpoint_leaks_nothing_on_the_wire(client: TestClient) -> None:
    """the bytes on the wire carry no exception text, type or traceback"""
    url = "/reports/weekly/stream?fail_at=1"
    with client.stream("GET", url) as response:
        expect_200(client, url, response)
        wire = b"".join(response.iter_raw()).decode()
    assert "event: error" in wire
    for secret in ("hunter2", "db.internal", "ConnectionError", "Traceback"):
        assert secret not in wire, f"{secret!r} reached the client"


def test_unknown_report_is_a_404_before_streaming(client: TestClient) -> None:
    """an unknown report is a real 404, and a bad parameter a 422: no stream starts"""
    response = client.get("/reports/monthly/stream")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert client.get("/reports/daily/stream?fail_at=-1").status_code == 422
