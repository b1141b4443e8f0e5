"""Lesson 10's chat page in a real Chromium, against the relay and the fake LLM server."""

from __future__ import annotations

import gc
import time
import types
from collections.abc import Iterator

import httpx
import pytest

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import StreamStats, reply_to
from course_app.runtime import LessonServer, set_pace


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LessonServer, LessonServer]]:
    # Tokens 10 ms apart (the suite's pace would make them 1 ms), so a reply visibly grows.
    # The servers run in this process, so set_pace reaches them.
    set_pace(0.2)
    solution = load_exercise("10_llm_streaming", "solutions")
    try:
        with LessonServer(create_fake_llm(), name="b10-llm") as fake:
            relay = solution.create_app(llm_settings(fake.url))
            with LessonServer(relay, name="b10-relay") as relay_server:
                yield fake, relay_server
    finally:
        set_pace(None)


def send(page, prompt: str, simulate: str = "") -> None:
    page.select_option("#simulate", simulate)
    page.fill("#prompt", prompt)
    page.click("#send")


def cancelled_lines(fake: LessonServer) -> int:
    # The fake server logs "stream <id> cancelled: the client left ..." for each one.
    return sum("cancelled" in line for line in fake.logs)


def wait_for_status(page, status: str) -> None:
    page.wait_for_function(f"document.getElementById('status').textContent === '{status}'")


def test_reply_streams_in_token_by_token(servers, page) -> None:
    _, relay = servers
    page.goto(relay.url + "/")
    send(page, "count forever")  # never ends by itself: any text shown arrived mid-answer
    # The page shows part of the answer, then more of it, while the answer is still running:
    # it renders each token as it comes rather than the whole reply at the end. (States, not
    # timings: on a loaded machine several tokens may land between two paints.)
    page.wait_for_function("document.querySelector('.assistant')?.textContent.length > 5")
    first = page.locator(".assistant").last.text_content()
    page.wait_for_function(
        "t => document.querySelector('.assistant').textContent.length > t.length", arg=first
    )
    assert page.locator("#status").text_content() == "streaming"
    page.click("#stop")
    wait_for_status(page, "stopped")


def test_reply_is_complete_with_its_usage(servers, page) -> None:
    _, relay = servers
    page.goto(relay.url + "/")
    send(page, "count to 30")
    wait_for_status(page, "done")
    expected = ", ".join(str(n) for n in range(1, 31)) + "."
    assert page.locator(".assistant").last.text_content() == expected
    assert page.locator("#usage").text_content() == "(30 tokens)"


def test_stop_halts_the_reply_and_cancels_the_upstream(servers, page) -> None:
    fake, relay = servers
    stats: StreamStats = fake.app.state.streams  # type: ignore[union-attr]
    before, logged_before = stats.cancelled, cancelled_lines(fake)
    page.goto(relay.url + "/")
    send(page, "count forever")  # never ends by itself: Stop always has something to stop
    page.wait_for_function("document.querySelector('.assistant').textContent.length > 5")
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'stopped'")
    deadline = time.monotonic() + 10
    while stats.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats.cancelled == before + 1, "the fake LLM server never saw the upstream cancelled"
    deadline = time.monotonic() + 5  # logged before the count moves: this is only a bound
    while cancelled_lines(fake) == logged_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cancelled_lines(fake) == logged_before + 1, fake.logs[-5:]
    stopped_at = page.locator(".assistant").last.text_content()
    page.wait_for_timeout(300)
    assert page.locator(".assistant").last.text_content() == stopped_at
    assert page.locator("#prompt").input_value() == ""  # a stopped message is not put back


def test_a_midstream_error_is_shown_to_the_user(servers, page) -> None:
    _, relay = servers
    page.goto(relay.url + "/")
    send(page, "hello", simulate="error-midstream")
    page.wait_for_function("document.getElementById('status').textContent === 'failed'")
    error = page.locator("#error").text_content()
    assert error == "The model failed to answer."
    assert page.locator(".assistant").last.text_content()  # the tokens before the failure stay


def test_a_rate_limit_is_shown_as_retryable(servers, page) -> None:
    _, relay = servers
    page.goto(relay.url + "/")
    send(page, "hello", simulate="rate-limit")
    page.wait_for_function("document.getElementById('status').textContent === 'failed'")
    assert (
        page.locator("#error").text_content()
        == "The model is busy. Try again in a moment. You can send it again."
    )
    # "Send it again" is one click: the text is back, and the fault was for one message.
    assert page.locator("#prompt").input_value() == "hello"
    assert page.locator("#simulate").input_value() == ""
    page.click("#send")
    wait_for_status(page, "done")
    assert page.locator(".assistant").last.text_content() == reply_to("hello")


def test_a_malformed_chunk_is_a_failure_not_a_hang(servers, page) -> None:
    _, relay = servers
    page.goto(relay.url + "/")
    send(page, "count to 10", simulate="bad-json")
    wait_for_status(page, "failed")
    assert page.locator("#error").text_content() == "Something went wrong on the server."
    assert page.locator(".assistant").last.text_content() == "1, 2, 3,"


def test_an_answer_cut_off_is_a_retryable_failure(servers, page) -> None:
    _, relay = servers
    page.goto(relay.url + "/")
    send(page, "count to 10", simulate="truncate")
    wait_for_status(page, "failed")
    assert page.locator("#error").text_content() == (
        "Lost the connection to the model. You can send it again."
    )


def test_failed_and_stopped_turns_are_not_sent_again(servers, page) -> None:
    _, relay = servers
    page.goto(relay.url + "/")
    send(page, "count to 2")
    wait_for_status(page, "done")
    send(page, "hello", simulate="rate-limit")  # an error event, before any token
    wait_for_status(page, "failed")
    send(page, "count forever")
    page.wait_for_function("document.querySelector('.assistant:last-child').textContent.length > 5")
    page.click("#stop")
    wait_for_status(page, "stopped")
    page.route(  # a non-OK response: the relay's own 422 would need an invalid history
        "**/chat/stream", lambda route: route.fulfill(status=503, body="busy"), times=1
    )
    send(page, "hi there")
    wait_for_status(page, "failed")
    assert page.locator("#error").text_content() == "Connection problem: the server answered 503."

    with page.expect_request("**/chat/stream") as request:
        send(page, "count to 3")
    wait_for_status(page, "done")
    assert request.value.post_data_json["messages"] == [
        {"role": "user", "content": "count to 2"},
        {"role": "assistant", "content": "1, 2."},
        {"role": "user", "content": "count to 3"},
    ]
    # The three unfinished turns stay on screen, marked, so the user can see what was lost.
    assert page.locator(".user.dropped").all_text_contents() == [
        "hello",
        "count forever",
        "hi there",
    ]


def paused_upstream_generators() -> list[types.AsyncGeneratorType]:
    """Async generators of the SDK and its HTTP stack that are paused, not finished."""
    stack = ("/openai/", "/httpx2/", "/httpcore/")
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, types.AsyncGeneratorType)
        and obj.ag_frame is not None
        and any(part in obj.ag_code.co_filename for part in stack)
    ]


@pytest.mark.parametrize("simulate", [None, "error-midstream"])
def test_an_answer_read_to_its_end_leaves_no_upstream_iterator_open(servers, simulate) -> None:
    """The relay reads the SDK's stream to its end, so nothing is left for the GC to close.

    After a `break`, the SDK's chain of async generators (SSE parser, httpx byte iterators)
    stayed paused in a reference cycle with the stream, for the garbage collector to close
    at some later moment, in whichever thread, each generator on its own: the likely source
    of the "async generator already executing" error this module once failed with under load.
    """
    _, relay = servers
    gc.disable()  # nothing may be collected in between: what is open stays visible
    try:
        before = {id(g) for g in paused_upstream_generators()}
        body = {"messages": [{"role": "user", "content": "count to 5"}], "simulate": simulate}
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", f"{relay.url}/chat/stream", json=body) as response:
                text = "".join(response.iter_text())
        assert ("event: done" if simulate is None else "event: error") in text
        left = [g for g in paused_upstream_generators() if id(g) not in before]
        assert [g.ag_code.co_qualname for g in left] == []
    finally:
        gc.enable()
