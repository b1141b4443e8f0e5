"""Lesson 04's page in Chromium: EventSource reconnects by itself and misses nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from course_app.checking import load_exercise
from course_app.runtime import LessonServer

DONE = "document.getElementById('status').textContent === 'done'"


@pytest.fixture(scope="module")
def server() -> Iterator[LessonServer]:
    solution = load_exercise("04_consuming_streams", "solutions")
    with LessonServer(solution.create_app(total=12), name="b04") as running:
        yield running


def shown(page) -> list[tuple[str, str]]:
    """(id, connection) of each item on the page."""
    return page.eval_on_selector_all(
        "#news li",
        "items => items.map(li => [li.dataset.id, li.querySelector('span').textContent])",
    )


def test_browser_reconnects_and_shows_every_event_once_in_order(server: LessonServer, page) -> None:
    page.goto(server.url + "/?drop_after=4")
    page.wait_for_function(DONE, timeout=30_000)
    ids = [i for i, _ in shown(page)]
    assert ids == [str(n) for n in range(1, 13)]
    # 12 events, dropped after every 4: three connections, the browser opened the last two.
    assert page.locator("#opens").text_content() == "3"
    connections = [c for _, c in shown(page)]
    assert connections == [f"(connection {n})" for n in (1, 2, 3) for _ in range(4)]


def test_the_page_drops_every_3_events_by_default(server: LessonServer, page) -> None:
    # `course serve 04` opens "/": the page must show reconnection without a query string.
    page.goto(server.url + "/")
    page.wait_for_function(DONE, timeout=30_000)
    assert [i for i, _ in shown(page)] == [str(n) for n in range(1, 13)]
    assert page.locator("#opens").text_content() == "4"
    assert "every 3 events" in page.locator("#about").text_content()


def test_drop_after_0_needs_one_connection(server: LessonServer, page) -> None:
    page.goto(server.url + "/?drop_after=0")
    page.wait_for_function(DONE, timeout=30_000)
    assert page.locator("#news li").count() == 12
    assert page.locator("#opens").text_content() == "1"
