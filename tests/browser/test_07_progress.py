"""Lesson 07's page in Chromium: a progress bar driven by EventSource that survives a reload."""

from __future__ import annotations

import asyncio
import queue
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from course_app.checking import load_exercise
from course_app.runtime import LessonServer

solution = load_exercise("07_progress_reporting", "solutions")

STATUS_IS = "document.getElementById('status').textContent === {!r}"
PERCENT_IS = "document.getElementById('percent').textContent === {!r}"


class Steps:
    """The work of the jobs under test: each report(...) or finish() is one step it takes."""

    def __init__(self) -> None:
        self.commands: queue.Queue[float | None] = queue.Queue()

    def report(self, *percents: float) -> None:
        for percent in percents:
            self.commands.put(percent)

    def finish(self) -> None:
        self.commands.put(None)

    async def __call__(self, request: Any, report: Callable[[Any], None]) -> Any:
        while True:
            try:
                percent = self.commands.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.005)
                continue
            if percent is None:
                return solution.JobState(percent=100, stage="done", message="all done")
            report(solution.JobState(percent=percent, stage="resizing", message=f"{percent} %"))


@pytest.fixture
def steps() -> Steps:
    return Steps()


@pytest.fixture
def server(steps: Steps) -> Iterator[LessonServer]:
    with LessonServer(solution.create_app(work=steps), name="b07") as running:
        yield running


def received(page) -> list[tuple[str, str, str]]:
    """(id, event, percent) of each event this page load has received."""
    rows = page.eval_on_selector_all(
        "#events li",
        "items => items.map(li => [li.dataset.id, li.dataset.kind, li.dataset.percent])",
    )
    return [tuple(row) for row in rows]


def test_a_reload_mid_job_continues_from_where_the_bar_was(
    server: LessonServer, steps: Steps, page
) -> None:
    page.goto(server.url + "/")
    page.click("#start")
    steps.report(10, 20, 30)
    page.wait_for_function(PERCENT_IS.format("30"))
    assert re.search(r"\?job=[0-9a-f]{32}$", page.url), "the page should remember its job"
    job_url = page.url

    page.reload()  # a new document, a new EventSource, with no Last-Event-ID to send
    page.wait_for_function(PERCENT_IS.format("30"))
    assert page.url == job_url
    # The first event after the reload is the job's current state: the bar never went to 0.
    assert received(page) == [("3", "progress", "30")]
    assert page.eval_on_selector("#bar", "bar => bar.value") == 30

    steps.report(60)
    steps.finish()
    page.wait_for_function(STATUS_IS.format("done"))
    assert received(page) == [
        ("3", "progress", "30"),
        ("4", "progress", "60"),
        ("5", "done", "100"),
    ]
    assert page.eval_on_selector("#bar", "bar => bar.value") == 100
    assert len(server.app.state.jobs.jobs) == 1, "the reload must not start another job"


def test_cancel_button_ends_the_job_with_cancelled(
    server: LessonServer, steps: Steps, page
) -> None:
    page.goto(server.url + "/")
    page.click("#start")
    steps.report(40)
    page.wait_for_function(PERCENT_IS.format("40"))
    page.click("#cancel")
    page.wait_for_function(STATUS_IS.format("cancelled"))
    assert received(page)[-1] == ("2", "cancelled", "40")
    assert page.eval_on_selector("#bar", "bar => bar.value") == 40


def test_an_unknown_job_in_the_address_says_so(server: LessonServer, page) -> None:
    page.goto(server.url + "/?job=0123456789abcdef0123456789abcdef")
    page.wait_for_function("document.getElementById('status').textContent.includes('gone')")
    assert page.locator("#start").is_enabled()


def test_a_job_with_the_real_work_runs_to_done(page) -> None:
    with LessonServer(solution.create_app(), name="b07-real") as server:
        page.goto(server.url + "/")
        page.fill("#photos", "5")
        page.click("#start")
        page.wait_for_function(STATUS_IS.format("done"), timeout=30_000)
        assert page.locator("#message").text_content() == "5 thumbnails ready"
        assert page.eval_on_selector("#bar", "bar => bar.value") == 100
