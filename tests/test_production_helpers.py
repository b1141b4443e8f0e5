"""Lesson 12's helpers besides nginx: the capacity measurement and the notebook's Chromium."""

from __future__ import annotations

import asyncio

import pytest

from course_app import browser
from course_app.capacity import KINDS, measure, render


def test_capacity_measures_a_fresh_server_process() -> None:
    row = measure("sse-starlette", streams=5, rate=20, seconds=0.3)
    assert (row.kind, row.streams, row.rate) == ("sse-starlette", 5, 20)
    assert row.events_per_s > 0
    assert row.cpu_percent >= 0
    table = render([row])
    assert table.splitlines()[1].startswith("sse-starlette")
    assert list(KINDS) == ["StreamingResponse", "sse-starlette", "fastapi.sse"]


def test_open_chromium_without_chromium_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_CHROMIUM", "/nonexistent/chromium")
    assert browser.chromium_path() is None
    assert asyncio.run(browser.open_chromium()) is None
