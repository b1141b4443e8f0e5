"""course_app.streams.shutdown: the server's shutdown signal, seen before the lifespan ends.

tests/test_07_shutdown.py shows it on a real uvicorn process and SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from types import FrameType

import pytest
from sse_starlette.sse import AppStatus

from course_app.streams import close_at_shutdown, shutdown_requested


@pytest.fixture
def app_status() -> Iterator[type[AppStatus]]:
    """sse-starlette's process-wide flag, reset afterwards (else every later stream ends)."""
    AppStatus.should_exit = False
    try:
        yield AppStatus
    finally:
        AppStatus.should_exit = False


class FakeServer:
    """Like uvicorn's Server: its bound handle_exit is the SIGTERM handler while it serves."""

    def __init__(self) -> None:
        self.should_exit = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit = True


def test_nothing_is_requested_by_default(app_status: type[AppStatus]) -> None:
    assert shutdown_requested() is False


def test_sse_starlettes_flag_is_a_request(app_status: type[AppStatus]) -> None:
    app_status.should_exit = True
    assert shutdown_requested() is True


def test_the_server_whose_handler_holds_sigterm_is_asked(app_status: type[AppStatus]) -> None:
    server = FakeServer()
    previous = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        assert shutdown_requested() is False
        server.should_exit = True  # what uvicorn's handler does at SIGTERM
        assert shutdown_requested() is True
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_close_runs_once_at_the_signal(app_status: type[AppStatus]) -> None:
    closes: list[str] = []

    async def main() -> list[str]:
        closed = asyncio.Event()

        async def close() -> None:
            closes.append("closed")
            closed.set()

        async with close_at_shutdown(close):
            app_status.should_exit = True
            await asyncio.wait_for(closed.wait(), 10)
            seen_inside = list(closes)
        return seen_inside

    assert asyncio.run(main()) == ["closed"]
    assert closes == ["closed"], "closed again at the block's end"


def test_close_runs_at_the_end_without_a_signal(app_status: type[AppStatus]) -> None:
    closes: list[str] = []

    async def close() -> None:
        closes.append("closed")

    async def main() -> None:
        async with close_at_shutdown(close):
            await asyncio.sleep(0.3)  # several polls, no signal
            assert closes == []

    asyncio.run(main())
    assert closes == ["closed"]
