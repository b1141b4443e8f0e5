"""Lesson 04's page in Chromium: EventSource reconnects by itself and misses nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from course_app import LessonServer
from course_app.exercise_loader import load_exercise


@pytest.fixture(scope="module")
def server() -> Iterator[LessonServer]:
    solution = load_exercise("04_consuming_streams", "solutions")
    with LessonServer(solution.create_app(total=12), name="b04") as running:
        yield running


def test_browser_reconnects_and_shows_every_event_once_in_order(server: LessonServer, page) -> None:
    page.goto(server.url + "/?drop_after=4")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'done'", timeout=30_000
    )
    ids = page.eval_on_selector_all("#news li", "items => items.map(li => li.dataset.id)")
    assert ids == [str(n) for n in range(1, 13)]
    # 12 events, dropped after every 4: three connections, the browser opened the last two.
    assert page.locator("#opens").text_content() == "3"


def test_without_drops_one_connection_is_enough(server: LessonServer, page) -> None:
    page.goto(server.url + "/")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'done'", timeout=30_000
    )
    assert page.locator("#news li").count() == 12
    assert page.locator("#opens").text_content() == "1"
