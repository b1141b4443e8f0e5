"""Lesson 09's page in Chromium: one EventSource, one addEventListener per event type."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from course_app.demos.broadcast_app import create_app
from course_app.runtime import LessonServer
from course_app.services import REDIS_HINT, RedisServer, redis_binary
from tests.unavailable import unavailable

CONNECTED = "document.getElementById('status').textContent === 'connected'"


@pytest.fixture(scope="module")
def server() -> Iterator[LessonServer]:
    with LessonServer(create_app(heartbeat=0.2), name="b09") as running:
        yield running


def texts(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "items => items.map(li => li.textContent)")


def test_each_event_type_reaches_its_own_listener(server: LessonServer, page) -> None:
    page.goto(server.url + "/")
    page.wait_for_function(CONNECTED)
    assert page.locator("#worker").text_content() == str(os.getpid())

    page.select_option("#level", "warning")
    page.fill("#title", "Disk almost full")
    page.click("#send-notification")
    page.wait_for_function("document.querySelectorAll('#notifications li').length === 1")
    item = page.locator("#notifications li").first
    assert item.get_attribute("class") == "warning"
    assert item.text_content().startswith("Disk almost full #")

    body = {"event": "message", "data": {"author": "grace", "text": "from Python"}}
    assert httpx.post(server.url + "/messages", json=body).status_code == 202
    page.wait_for_function("document.querySelectorAll('#messages li').length === 1")
    assert texts(page, "#messages li")[0].startswith("grace: from Python #")

    # Typed heartbeats, every 0.2 s here: counted by their own listener, shown in local time.
    page.wait_for_function("Number(document.getElementById('heartbeats').textContent) >= 2")
    assert page.locator("#beat").text_content().startswith("(last at ")
    # A notification did not land in the message list, nor the other way round.
    assert len(texts(page, "#notifications li")) == 1 and len(texts(page, "#messages li")) == 1
    assert texts(page, "#log li")[0].startswith("POST /messages: 202")


def test_a_bad_message_shows_the_422(server: LessonServer, page) -> None:
    page.goto(server.url + "/")
    page.wait_for_function(CONNECTED)
    page.fill("#text", "")
    page.click("#send-message")
    page.wait_for_function("document.querySelector('#log li').textContent.includes('422')")
    assert page.locator("#messages li").count() == 0


def test_the_page_shows_redis_going_away_and_coming_back(page) -> None:
    if redis_binary() is None:
        message = f"this test needs redis-server: {REDIS_HINT}"
        unavailable(message)
    with (
        RedisServer(name="b09-redis") as redis_server,
        LessonServer(
            create_app(redis_url=redis_server.url, redis_retry=0.05, heartbeat=60), name="b09-r"
        ) as server,
    ):
        page.goto(server.url + "/")
        page.wait_for_function(CONNECTED)
        redis_server.stop(keep_data=True)
        page.wait_for_function(
            "document.querySelector('#system li')?.textContent.startsWith('Redis is down')"
        )
        redis_server.start()
        page.wait_for_function(
            "document.querySelector('#system li').textContent.startsWith('Redis is up')"
        )
        page.click("#send-message")
        page.wait_for_function("document.querySelectorAll('#messages li').length === 1")
        assert texts(page, "#messages li")[0].startswith("ada: Hello, everyone! #")
