"""A test that needs a program this machine lacks: skipped on a learner's machine, failed
in CI (`CI` set), where every program the course uses must be installed and tested.
Chromium, the program most tests need, is launched here too."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest

from course_app.runtime import CHROMIUM_ARGS, CHROMIUM_HINT, chromium_path


def unavailable(message: str) -> NoReturn:
    """Skip with ``message`` (what to install); fail with it in CI."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def debian_chromium(needed_for: str) -> Iterator[Any]:
    """The system's Chromium driven by Playwright's sync API (never a downloaded browser),
    closed at the end; without one, :func:`unavailable` says what it is ``needed_for``."""
    path = chromium_path()
    if path is None:
        unavailable(f"Chromium is needed for {needed_for}: {CHROMIUM_HINT}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
