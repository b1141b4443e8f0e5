"""Lesson 00's demo page in a real Chromium: ticks arrive through EventSource, in order."""

from collections.abc import Iterator

import pytest

from course_app.demos.welcome_demo import create_app
from course_app.runtime import LessonServer


@pytest.fixture
def server() -> Iterator[LessonServer]:
    with LessonServer(create_app(), name="browser-welcome") as running:
        yield running


DONE = "document.querySelector('#status').textContent === 'done'"


def test_page_shows_every_tick_in_order_then_done(server: LessonServer, page) -> None:
    page.goto(f"{server.url}/?count=5")
    page.wait_for_function(DONE)
    items = page.locator("#ticks li").all_text_contents()
    assert items == [f"tick {n} of 5 (id {n})" for n in range(1, 6)]


def test_play_again_replays_the_stream_from_the_start(server: LessonServer, page) -> None:
    """After "done" the button opens a new stream; the list starts over, it does not grow."""
    streams: list[str] = []
    page.on(
        "request", lambda request: streams.append(request.url) if "/ticks" in request.url else None
    )
    page.goto(f"{server.url}/?count=3")
    page.wait_for_function(DONE)
    page.locator("#again").click()  # the click handler resets the status at once
    page.wait_for_function(DONE)
    items = page.locator("#ticks li").all_text_contents()
    assert items == [f"tick {n} of 3 (id {n})" for n in range(1, 4)]
    assert len(streams) == 2
    assert page.locator("#again").is_visible()


RECORD_ARRIVALS = """
window.__arrivals = [];
new MutationObserver(() => window.__arrivals.push(performance.now()))
    .observe(document, {childList: true, subtree: true});
"""


def test_page_receives_ticks_one_by_one(server: LessonServer, page) -> None:
    """The list grows while the stream is open: events are not delivered all at once."""
    page.add_init_script(RECORD_ARRIVALS)
    page.goto(f"{server.url}/?count=10")
    page.wait_for_function(DONE)
    arrivals = page.evaluate("window.__arrivals")
    # A buffered response would add all ten items in one task, at one instant.
    assert len(set(arrivals)) >= 5
