"""Lesson 10's chat page in a real Chromium, against the relay and the fake LLM server."""

from __future__ import annotations

import ast
import asyncio
import gc
import json
import re
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Body, FastAPI
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import StreamStats, reply_to
from course_app.runtime import LessonServer, html_page, set_pace

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "10_llm_streaming.ipynb"


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


@pytest.fixture(scope="module")
def page(module_page: object) -> object:
    """One page for the module (each test starts with goto(), which ends what ran before)."""
    return module_page


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
    assert page.locator(".tool").count() == 0  # an answer without tools shows no tool line


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


# --- Tool calls: the page renders the `tool` events of the notebook's relay_with_tools() ---
#
# The exercise's relay sends no `tool` events; the notebook's relay_with_tools() does, and its
# app serves this page. A test cannot import a notebook, so a scripted relay replays what
# relay_with_tools() sent in the notebook's stored output (strict nbval keeps that output
# true), and pauses where the test says: what the page shows mid-answer is then certain.

TOOL_PROMPT = "get_weather city=Paris and get_weather city=Oslo"
WAIT = ("wait", "")  # the scripted stream pauses here until the test calls go_on()


def recorded_tool_events() -> list[tuple[str, str]]:
    """The events of the notebook's transcript of relay_with_tools(), as (event, data)."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    cell = next(
        cell
        for cell in notebook["cells"]
        if cell["cell_type"] == "code" and "tools_relay = serve(" in "".join(cell["source"])
    )
    printed = "".join("".join(output.get("text", "")) for output in cell["outputs"])
    events: list[tuple[str, str]] = []
    for line in printed.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "token":  # "token x16  '...'": the tokens joined; split them up again
            text = ast.literal_eval(rest.split(None, 1)[1])
            events += [token(piece) for piece in re.findall(r"\S+\s*", text)]
        elif kind in ("tool", "done"):
            events.append((kind, rest.strip()))
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == ["tool"] * 4 and kinds[-1] == "done", (
        f"notebook 10's transcript of relay_with_tools() changed shape: {printed[:300]!r}"
    )
    return events


def tool(payload: dict[str, Any]) -> tuple[str, str]:
    return ("tool", json.dumps(payload))


def token(text: str) -> tuple[str, str]:
    return ("token", json.dumps({"text": text}))


HOSTILE_NAME = '<img src=x onerror="window.pwned=1">'
SCRIPTS: dict[str, list[tuple[str, str]]] = {
    "thanks": [token("You are "), token("welcome."), ("done", "{}")],
    # Tool events a buggy or hostile relay could send, between two parts of an answer.
    "broken tools": [
        token("Checking"),
        ("tool", "not json{"),
        tool({"index": 0, "status": "called"}),  # no name
        tool({"index": 0, "name": HOSTILE_NAME, "status": "called"}),
        WAIT,
        tool(
            {
                "index": 0,
                "name": HOSTILE_NAME,
                "status": "done",
                "arguments": {"q": "<b>x</b>"},
                "result": "<script>window.pwned=2</script>",
            }
        ),
        token(" done."),
        ("done", "{}"),
    ],
}


class ScriptedRelay:
    """Lesson 10's page, and a POST /chat/stream that plays a script chosen by the prompt."""

    def __init__(self) -> None:
        recorded = recorded_tool_events()
        ran = next(i for i, (_, data) in enumerate(recorded) if '"status": "done"' in data)
        answer = next(i for i, (kind, _) in enumerate(recorded) if kind == "token")
        # Pauses once the calls are announced, and once they have run, before the answer.
        played = [*recorded[:ran], WAIT, *recorded[ran:answer], WAIT, *recorded[answer:]]
        self.scripts = {**SCRIPTS, TOOL_PROMPT: played}
        self.answer = "".join(json.loads(data)["text"] for kind, data in played if kind == "token")
        self._go = threading.Semaphore(0)
        self.app = FastAPI()
        self.app.get("/", response_class=HTMLResponse)(lambda: html_page("10_chat.html"))
        self.app.post("/chat/stream")(self.chat_stream)

    def go_on(self) -> None:
        self._go.release()

    async def chat_stream(
        self,
        messages: list[dict[str, str]] = Body(embed=True),  # noqa: B008
    ) -> EventSourceResponse:
        script = self.scripts[messages[-1]["content"]]

        async def events() -> AsyncIterator[dict[str, str]]:
            for kind, data in script:
                if (kind, data) == WAIT:
                    # Released from the test's thread: an asyncio.Event would belong to
                    # the server's loop. A poll keeps the wait cancellable if the page leaves.
                    while not self._go.acquire(blocking=False):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                else:
                    yield {"event": kind, "data": data}

        return EventSourceResponse(events())


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedRelay, LessonServer]]:
    relay = ScriptedRelay()
    with LessonServer(relay.app, name="b10-tools") as server:
        yield relay, server


def shows(page, condition: str, hint: str) -> None:
    """Wait until the page shows ``condition`` (JavaScript); if it never does, say why."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition)
    except PlaywrightTimeout:
        lines = page.locator(".assistant").last.inner_html()
        pytest.fail(f"{hint}\nThe last answer's HTML: {lines!r}", pytrace=False)


def tool_lines(page, status: str) -> list[str]:
    return page.locator(f".assistant:last-child .tool[data-status='{status}']").all_text_contents()


def answer_parts(page) -> list[str]:
    """The last answer's segments in order: tool lines ("tool") and runs of text ("text")."""
    return page.eval_on_selector_all(
        ".assistant:last-child > *", "nodes => nodes.map(n => n.className)"
    )


def test_tool_calls_show_while_they_run_then_the_answer_after_them(scripted, page) -> None:
    relay, server = scripted
    page.goto(server.url + "/")
    send(page, TOOL_PROMPT)
    # The calls are announced and the stream paused: the page shows them now, not at the end.
    shows(
        page,
        "document.querySelectorAll('.tool').length === 2",
        "The relay announced two calls and paused, but the page shows no two .tool lines: does "
        "it handle `tool` events as they arrive (not ignore them, not wait for the end)?",
    )
    assert tool_lines(page, "called") == ["calling get_weather(…)"] * 2
    assert answer_parts(page) == ["tool", "tool"]
    relay.go_on()  # the calls have run; still no answer
    shows(
        page,
        "document.querySelectorAll('.tool[data-status=done]').length === 2",
        "Both calls ran (two `done` tool events), but their lines are not marked done: does "
        "a `done` event update the line of its call (same index)?",
    )
    assert tool_lines(page, "done") == [
        'get_weather(city="Paris") → {"city":"Paris","forecast":"sunny","high_c":21}',
        'get_weather(city="Oslo") → {"city":"Oslo","forecast":"sunny","high_c":21}',
    ]
    assert page.locator("#status").text_content() == "streaming"
    relay.go_on()
    wait_for_status(page, "done")
    assert answer_parts(page) == ["tool", "tool", "text"]  # the answer comes after the calls
    assert page.locator(".assistant .text").last.text_content() == relay.answer
    assert page.locator("#error").text_content() == ""
    # The history sent next holds what the model said, not the page's tool lines.
    with page.expect_request("**/chat/stream") as request:
        send(page, "thanks")
    wait_for_status(page, "done")
    sent = request.value.post_data_json["messages"]
    assert sent == [
        {"role": "user", "content": TOOL_PROMPT},
        {"role": "assistant", "content": relay.answer},
        {"role": "user", "content": "thanks"},
    ], "the assistant turn in the history should be the answer's text only, no tool lines"
    assert page.locator(".assistant").last.text_content() == "You are welcome."


def test_broken_tool_events_show_an_error_line_and_the_answer_goes_on(scripted, page) -> None:
    relay, server = scripted
    page.goto(server.url + "/")
    send(page, "broken tools")
    shows(
        page,
        "document.querySelectorAll('.tool').length === 3",
        "Two unreadable tool events and one call arrived, but the page does not show three "
        ".tool lines: a tool event it cannot read should become an error line.",
    )
    relay.go_on()
    shows(
        page,
        "document.getElementById('status').textContent !== 'streaming'",
        "The answer never finished.",
    )
    # A broken progress event does not fail the answer: the tokens after it keep coming.
    assert page.locator("#status").text_content() == "done", page.locator("#error").text_content()
    assert page.locator("#error").text_content() == ""
    assert answer_parts(page) == ["text", "tool unreadable", "tool unreadable", "tool", "text"]
    assert tool_lines(page, "unreadable") == ["a tool event the page could not read"] * 2
    # Model text is shown as text: no element made from it, no script run.
    made = page.locator("#log img, #log b, #log script").count()
    assert made == 0, "a tool event's name, arguments or result became HTML: use textContent"
    assert page.evaluate("window.pwned") is None
    assert tool_lines(page, "done") == [
        f'{HOSTILE_NAME}(q="<b>x</b>") → "<script>window.pwned=2</script>"'
    ]
    assert page.locator(".assistant .text").all_text_contents() == ["Checking", " done."]
