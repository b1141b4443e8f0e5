"""Shared fixtures: a real Chromium for browser tests, a real redis-server for Redis tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unavailable import debian_chromium, unavailable


@pytest.fixture(scope="module")
def redis_server(request: pytest.FixtureRequest) -> Iterator[object]:
    """Debian's redis-server on a free port for one test module, named after the module."""
    from course_app.services import REDIS_HINT, RedisServer, redis_binary

    if redis_binary() is None:
        unavailable(f"these tests need redis-server: {REDIS_HINT}")
    with RedisServer(name=f"t-{Path(request.module.__file__).stem}") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Debian Chromium driven by Playwright (never a downloaded browser).

    Skips on a learner's machine without Chromium; fails in CI, where it must run.
    Module-scoped: Playwright's sync API keeps an event loop running on the main thread
    while it is open, and `asyncio.run()` in later test modules would then refuse to run.
    """
    with debian_chromium("browser tests") as chromium:
        yield chromium


def _page_of_its_own(browser: object) -> Iterator[object]:
    context = browser.new_context()  # type: ignore[attr-defined]
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A page in a fresh browser context (no cookies, storage or open streams of another)."""
    yield from _page_of_its_own(browser)


@pytest.fixture(scope="module")
def module_page(browser: object) -> Iterator[object]:
    """One page for a whole module: cheaper, for tests that each start with ``goto()``."""
    yield from _page_of_its_own(browser)
