"""Lesson 13's chat page in a real Chromium: a reload mid-answer, Stop, a 429, the history.

The service is the reference solution's app, next to the fake LLM server. "count forever"
answers (cut by the relay at 20,000 pieces) run for 200 s at this pace, so they are still
running whenever the test acts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import StreamStats, reply_to
from course_app.runtime import LessonServer, set_pace

ANSWER = "document.querySelector('#log .assistant:last-of-type')?.textContent ?? ''"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LessonServer, LessonServer]]:
    # Tokens 10 ms apart, so an answer visibly grows. The servers run in this process,
    # so set_pace reaches them.
    set_pace(0.2)
    solution = load_exercise("13_capstone", "solutions")
    try:
        with LessonServer(create_fake_llm(), name="b13-llm") as fake:
            with LessonServer(solution.create_app(llm_settings(fake.url)), name="b13-chat") as chat:
                yield fake, chat
    finally:
        set_pace(None)


def send(page, prompt: str, simulate: str = "") -> None:
    page.select_option("#simulate", simulate)
    page.fill("#prompt", prompt)
    page.click("#send")


def wait_for_status(page, status: str) -> None:
    page.wait_for_function(f"document.getElementById('status').textContent === '{status}'")


def counted(text: str) -> int:
    """How far a "count forever" answer got; fails on a gap or a repeat."""
    numbers = [int(n) for n in text.rstrip(",.").split(", ")]
    assert numbers == list(range(1, len(numbers) + 1)), f"lost or repeated text: {text}"
    return len(numbers)


def wait_for_count(page, above: int) -> None:
    page.wait_for_function(f"({ANSWER}).split(',').length > {above + 1}")


def test_a_reload_mid_answer_goes_on_without_losing_or_repeating_text(servers, page) -> None:
    fake, chat = servers
    stats: StreamStats = fake.app.state.streams  # type: ignore[union-attr]
    started = stats.started
    resumes: list[dict[str, str]] = []
    page.on(
        "request",
        lambda request: (
            resumes.append(request.headers) if request.url.endswith("/stream") else None
        ),
    )
    page.goto(chat.url + "/")
    send(page, "count forever")
    wait_for_count(page, 10)
    before = counted(page.evaluate(ANSWER))
    page.reload()
    wait_for_status(page, "streaming")  # resumed
    assert counted(page.evaluate(ANSWER)) >= before  # the text from before the reload, kept
    wait_for_count(page, before + 10)
    page.click("#stop")
    wait_for_status(page, "stopped")
    assert counted(page.evaluate(ANSWER)) > before + 10
    assert stats.started == started + 1, "the reload started a second answer"
    assert len(resumes) == 1 and resumes[0].get("last-event-id", "").startswith("msg_"), resumes


def test_stop_stops_the_model_and_keeps_the_text(servers, page) -> None:
    fake, chat = servers
    stats: StreamStats = fake.app.state.streams  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while stats.open and time.monotonic() < deadline:  # earlier answers have ended
        time.sleep(0.02)
    cancelled = stats.cancelled
    page.goto(chat.url + "/")
    send(page, "count forever")
    wait_for_count(page, 3)
    page.click("#stop")
    wait_for_status(page, "stopped")
    deadline = time.monotonic() + 5
    while stats.cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats.cancelled == cancelled + 1, "the fake LLM server never saw the upstream closed"
    stopped_at = page.evaluate(ANSWER)
    page.wait_for_timeout(200)
    assert page.evaluate(ANSWER) == stopped_at
    counted(stopped_at)
    assert page.locator("#log .assistant.dropped").count() == 1
    assert page.locator("#prompt").input_value() == ""  # a stopped message is not put back


def test_an_upstream_429_shows_a_safe_error(servers, page) -> None:
    _, chat = servers
    page.goto(chat.url + "/")
    send(page, "hello", simulate="rate-limit")
    wait_for_status(page, "failed")
    assert page.locator("#error").text_content() == "The model is busy. Try again in a moment."
    assert page.locator("#prompt").input_value() == "hello"  # sending it again is one click
    assert page.locator("#simulate").input_value() == ""  # the fault was for one message
    page.click("#send")
    wait_for_status(page, "done")
    assert page.evaluate(ANSWER) == reply_to("hello")


def test_the_next_turn_carries_the_history(servers, page) -> None:
    _, chat = servers
    page.goto(chat.url + "/")
    page.click("#new-chat")
    send(page, "hello")
    wait_for_status(page, "done")
    with page.expect_request(lambda request: request.url.endswith("/api/chat")) as posted:
        send(page, "count to 3")
    wait_for_status(page, "done")
    assert page.evaluate(ANSWER) == "1, 2, 3."
    body = json.loads(posted.value.post_data)
    assert [(m["role"], m["parts"][0]["text"]) for m in body["messages"]] == [
        ("user", "hello"),
        ("assistant", reply_to("hello")),
        ("user", "count to 3"),
    ]
    assert body["messages"][1]["id"].startswith("msg_")
    assert body["id"] == page.locator("#chat-id").text_content()
