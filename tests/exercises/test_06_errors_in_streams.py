"""Lesson 06: retrying_events() retries only before the first event, ends every stream
exactly once, safely, and closes every source it opened."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

import httpx
import httpx_sse
import pytest
from fastapi.testclient import TestClient

from task_helpers import cancel_and_wait

Event = dict[str, Any]
T = TypeVar("T")

SECRET = "db.internal:5432 refused user 'reports' (password=hunter2)"
SECRETS = ("hunter2", "db.internal", "RuntimeError", "ConnectionResetError", "Traceback")


class Opener:
    """A source factory that counts the sources it opened and the ones that ended.

    Source number n (from 1) is refused before its first event if n <= `refuse`, stalls
    before its first event if n <= `refuse + stall`, and otherwise yields `count` rows,
    raising `error` at row `fail_at` or hanging at row `hang_at`.
    """

    def __init__(
        self,
        count: int,
        *,
        refuse: int = 0,
        stall: int = 0,
        fail_at: int | None = None,
        hang_at: int | None = None,
        error: Exception | None = None,
    ) -> None:
        self.count, self.refuse, self.stall = count, refuse, stall
        self.fail_at, self.hang_at = fail_at, hang_at
        self.error = error or RuntimeError("password=hunter2 at db.internal")
        self.opened = 0
        self.ended = 0

    def __call__(self) -> AsyncIterator[Event]:
        self.opened += 1
        return self._events(self.opened)

    async def _events(self, number: int) -> AsyncIterator[Event]:
        try:
            if number <= self.refuse:
                raise ConnectionRefusedError(SECRET)
            if number <= self.refuse + self.stall:
                await asyncio.Event().wait()
            for row in range(self.count):
                if row == self.fail_at:
                    raise self.error
                if row == self.hang_at:
                    await asyncio.Event().wait()
                yield {"event": "row", "data": str(row)}
        finally:
            self.ended += 1


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def run(
    exercise: ModuleType, opener: Opener, *, attempts: int = 3, item_timeout: float = 5
) -> list[Event]:
    """All events of retrying_events(opener); checks that every source ended with it."""

    async def main() -> list[Event]:
        stream = exercise.retrying_events(opener, attempts=attempts, item_timeout=item_timeout)
        events = await collect(stream)
        # Checked here: when asyncio.run() ends, it closes every generator left open.
        assert opener.ended == opener.opened, "a source was left open"
        return events

    return asyncio.run(main())


def kinds(events: list[Event]) -> list[str]:
    return [event.get("event", "message") for event in events]


def error_of(events: list[Event]) -> dict[str, Any]:
    return json.loads(events[-1]["data"])


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock a test moves forward at once: `loop.offset += seconds`.

    `asyncio.timeout()` and `asyncio.wait_for()` read this clock, so a test can let a minute
    pass on it in no time, with seconds of real time to spare for a busy machine.
    """

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset


def run_on_clock(main: Callable[[ClockLoop], Awaitable[T]]) -> T:
    with asyncio.Runner(loop_factory=ClockLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, ClockLoop)
        return runner.run(main(loop))


def test_classify_reads_the_failures_table(
    exercise: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """classify() gives the first FAILURES entry the exception is an instance of, else INTERNAL

    Which built-in function says whether an object is an instance of a class or of one of
    its subclasses? Is the table read when classify() runs, so that a new entry works at once?
    """
    assert exercise.classify(TimeoutError()).code == "timeout"
    assert exercise.classify(ConnectionRefusedError(SECRET)).code == "unavailable"
    assert exercise.classify(ValueError(SECRET)) == exercise.INTERNAL
    forbidden = exercise.StreamError(code="forbidden", message="Not allowed.", retryable=False)
    monkeypatch.setitem(exercise.FAILURES, PermissionError, forbidden)
    assert exercise.classify(PermissionError()) == forbidden, "a new FAILURES entry was ignored"


def test_normal_end_gives_exactly_one_done(exercise: ModuleType) -> None:
    """the source's events, then exactly one done, and the source is closed

    What does `anext()` raise when the source has no more events? Is `done` yielded once,
    after the last row, and nowhere else?
    """
    opener = Opener(3)
    assert kinds(run(exercise, opener)) == ["row", "row", "row", "done"]
    assert (opener.opened, opener.ended) == (1, 1)


def test_failure_after_the_first_event_is_reported_not_retried(exercise: ModuleType) -> None:
    """a failure after the first event is one error event from FAILURES, with no retry

    Once a row has reached the client, what would it see if you opened the source again?
    Does your code remember whether it has yielded anything yet?
    """
    opener = Opener(5, fail_at=2, error=ConnectionResetError(SECRET))
    events = run(exercise, opener)
    assert opener.opened == 1, "the source was opened again after rows had been sent"
    assert kinds(events) == ["row", "row", "error"]
    assert error_of(events) == {
        "code": "unavailable",
        "message": "The data source is unavailable.",
        "retryable": True,
    }


def test_a_bug_is_not_retried(exercise: ModuleType) -> None:
    """a failure that is not retryable gives one internal error at once, even before any row

    Which errors does FAILURES mark as retryable, and what does classify() give for the
    others? Is opening the source again worth it when the next try will fail the same way?
    """
    opener = Opener(5, fail_at=0)
    events = run(exercise, opener)
    assert kinds(events) == ["error"]
    assert error_of(events)["code"] == "internal" and error_of(events)["retryable"] is False
    assert opener.opened == 1, "a non-retryable failure was retried"


def test_error_event_leaks_no_internals(
    exercise: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """the error event hides the exception's text; the server log keeps it

    Where does the error event's message come from, if not from the exception? Which
    logging call records the exception with its traceback?
    """
    opener = Opener(5, fail_at=1)
    with caplog.at_level(logging.INFO):
        events = run(exercise, opener)
    wire = json.dumps(events)
    for secret in SECRETS:
        assert secret not in wire, f"{secret!r} reached the client"
    assert "hunter2" in caplog.text, "log the exception (logger.exception) so it can be fixed"


def test_a_refused_source_is_opened_again(exercise: ModuleType) -> None:
    """a retryable failure before the first event opens a fresh source; the client sees no error

    The client has received nothing yet: what does it lose if you call open_source()
    again? What must happen to the source that failed before you do?
    """
    opener = Opener(3, refuse=2)
    assert kinds(run(exercise, opener, attempts=3)) == ["row", "row", "row", "done"]
    assert opener.opened == 3
    assert opener.ended == 3


def test_gives_up_after_the_last_attempt(exercise: ModuleType) -> None:
    """after `attempts` sources failed before their first event: one error event, no more tries

    How many sources may you open in all? What does the last failure become when no
    attempt is left?
    """
    opener = Opener(3, refuse=10)
    events = run(exercise, opener, attempts=3)
    assert events, "the stream ended without a terminal event"
    assert kinds(events) == ["error"]
    assert error_of(events)["code"] == "unavailable"
    assert (opener.opened, opener.ended) == (3, 3)

    opener = Opener(3, refuse=10)
    assert kinds(run(exercise, opener, attempts=1)) == ["error"]
    assert opener.opened == 1, "attempts=1 means one source, no retry"


def test_stall_before_the_first_event_is_retried(exercise: ModuleType) -> None:
    """a source that stalls before its first event times out and is replaced by a fresh one

    What does `asyncio.timeout()` raise when the wait is over, and what does FAILURES say
    about that exception? Is the stalled source closed before the next one is opened?
    """
    opener = Opener(3, stall=1)
    events = run(exercise, opener, item_timeout=0.05)
    assert kinds(events) == ["row", "row", "row", "done"]
    assert (opener.opened, opener.ended) == (2, 2)


def test_stall_after_the_first_event_is_a_timeout_error(exercise: ModuleType) -> None:
    """a source that stops answering after a row gets one timeout error event, and is closed

    Is the timeout around each wait for an event, including the waits after the first row?
    """
    opener = Opener(5, hang_at=1)
    events = run(exercise, opener, item_timeout=0.05)
    assert opener.opened == 1, "the source was opened again after a row had been sent"
    assert kinds(events) == ["row", "error"]
    assert error_of(events)["code"] == "timeout" and error_of(events)["retryable"] is True


def test_the_timeout_is_per_item_not_per_stream(exercise: ModuleType) -> None:
    """a slow but steady source is no stall: the timeout bounds each event, not the whole stream

    Where does your timeout start counting: once for the whole stream, or afresh before
    each `anext()`? A report may take an hour as long as its rows keep coming.
    """

    async def steady(loop: ClockLoop) -> AsyncIterator[Event]:
        for row in range(10):
            loop.offset += 6  # 6 s pass on the loop's clock, at once: 60 s in all
            await asyncio.sleep(0)  # the loop fires every timer that is now due
            yield {"event": "row", "data": str(row)}

    async def main(loop: ClockLoop) -> list[Event]:
        stream = exercise.retrying_events(lambda: steady(loop), attempts=1, item_timeout=10)
        return await collect(stream)

    events = run_on_clock(main)
    assert kinds(events) == ["row"] * 10 + ["done"], (
        "every row came 6 s after the previous one, within item_timeout=10, but after"
        f" {kinds(events).count('row')} rows the stream ended with {events[-1]}"
    )


def test_client_leaving_closes_the_source_and_yields_nothing_more(exercise: ModuleType) -> None:
    """when the consumer leaves, the source is closed and nothing more is yielded

    `aclose()` raises GeneratorExit at your `yield`: which of your blocks run then, and
    does any of them yield? Do you open another source when that happens?
    """

    async def main() -> list[Event]:
        stream = exercise.retrying_events(opener, attempts=3, item_timeout=5)
        received = [await anext(stream)]
        await stream.aclose()  # raises RuntimeError if the wrapper yields while closing
        assert opener.ended == 1, "the source was left open, paused at its yield"
        return received

    opener = Opener(100)
    assert kinds(asyncio.run(main())) == ["row"]
    assert opener.opened == 1


def test_cancellation_is_no_failure_to_retry(exercise: ModuleType) -> None:
    """cancelling the task while it waits for the first event cancels it for real: no retry

    Is CancelledError an Exception? What happens if an `except` clause catches it, and
    the code opens another source or yields an error event instead?
    """

    async def main() -> bool:
        stream = exercise.retrying_events(opener, attempts=3, item_timeout=30)
        task = asyncio.create_task(collect(stream))
        for _ in range(20):
            await asyncio.sleep(0)
        return await cancel_and_wait(task)

    opener = Opener(5, stall=5)
    assert asyncio.run(main()), "CancelledError was swallowed"
    assert opener.opened == 1, "a cancellation was treated as a failure and retried"
    assert opener.ended == 1


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


def test_endpoint_retries_refused_connections(client: TestClient) -> None:
    """GET /reports/daily/stream: six rows, then done, also after two refused connections

    Does report_stream() pass a source factory (report_opener(...)) to retrying_events(),
    with ATTEMPTS, so that each attempt gets a fresh connection?
    """
    for url in ["/reports/daily/stream", "/reports/daily/stream?refused=2"]:
        events = stream_events(client, url)
        assert [kind for kind, _ in events] == ["row"] * 6 + ["done"], url


def test_endpoint_reports_a_failure_as_an_event(client: TestClient) -> None:
    """a failure after the first byte is a 200 whose last event is error, with nothing leaked

    Once the 200 is out, what is left to tell the client that the report failed? Do the
    bytes on the wire carry anything from the exception?
    """
    url = "/reports/weekly/stream?fail_at=1"
    with client.stream("GET", url) as response:
        expect_200(client, url, response)
        wire = b"".join(response.iter_raw()).decode()
    assert wire.count("event: row") == 1, "rows were sent twice: a retry after the first row?"
    assert wire.count("event: error") == 1
    assert '"code":"unavailable"' in wire
    for secret in SECRETS:
        assert secret not in wire, f"{secret!r} reached the client"


def test_unknown_report_is_a_404_before_streaming(client: TestClient) -> None:
    """an unknown report is a real 404, and a bad parameter a 422: no stream starts

    Where must the check go so that it runs before the response (and its status line) is
    sent: in the endpoint, or inside the stream?
    """
    response = client.get("/reports/monthly/stream")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert client.get("/reports/daily/stream?refused=-1").status_code == 422
