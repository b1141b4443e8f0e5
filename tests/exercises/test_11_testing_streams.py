"""Lesson 11: your tests pass against the correct news feed and catch every planted bug.

The exercise module is a test module: its tests run in a pytest subprocess of their own,
once against the correct feed and once per bug in ``course_app.news_feed.BUGS`` (the
``COURSE_FEED_BUG`` variable picks it). A bug counts as caught when at least one of your
tests fails against it, and only if all of them pass against the correct feed: a test that
always fails would otherwise "catch" everything.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

from course_app.news_feed import BUGS
from course_app.pytest_report import run_reported

BUG_ENV = "COURSE_FEED_BUG"
# One of your tests that hangs on a bug fails after this long (and so catches it).
YOUR_TEST_TIMEOUT = 10
ROOT = Path(__file__).resolve().parents[2]
# Eight runs of your tests (the correct feed, then the bugs, four at a time) in the first
# test's fixture: more than one exercise test's usual timeout.
pytestmark = pytest.mark.timeout(180)

Verdicts = dict[str, dict[str, str]]  # bug ("" for the correct feed) -> test name -> outcome


def run_your_tests(path: Path, bug: str) -> dict[str, str]:
    """Run the tests in ``path`` against the feed with ``bug``; returns name -> outcome."""
    rows, _ = run_reported(
        ["-o", f"timeout={YOUR_TEST_TIMEOUT}", "--import-mode=importlib", str(path)],
        cwd=ROOT,
        env={BUG_ENV: bug},
        timeout=300,
    )
    return {row["nodeid"].rpartition("::")[2]: row["outcome"] for row in rows}


@pytest.fixture(scope="module")
def verdicts(exercise: ModuleType) -> Verdicts:
    path = Path(exercise.__file__)
    correct = run_your_tests(path, "")
    if not correct or any(outcome != "passed" for outcome in correct.values()):
        return {"": correct}  # bugs are only worth hunting with tests that pass
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(BUGS, pool.map(lambda bug: run_your_tests(path, bug), BUGS), strict=True))
    return {"": correct, **runs}


def assert_caught(verdicts: Verdicts, bug: str) -> None:
    if bug not in verdicts:
        pytest.fail("not tried yet: first make all your tests pass against the correct feed")
    if not any(outcome != "passed" for outcome in verdicts[bug].values()):
        pytest.fail(f"not caught: all your tests pass although {BUGS[bug]}")


def test_your_tests_pass_against_the_correct_feed(verdicts: Verdicts) -> None:
    """your tests all pass against the correct feed (at least five of them)

    A test that fails against correct code is a false alarm, and it would "catch" every bug.
    Run `pytest exercises/11_testing_streams.py` and read the first failure.
    """
    correct = verdicts[""]
    if failing := sorted(name for name, outcome in correct.items() if outcome != "passed"):
        pytest.fail("these fail against the correct feed:\n" + "\n".join(failing))
    if len(correct) < 5:
        pytest.fail(f"write at least five tests: {len(correct)} collected")


def test_caught_no_blank_line(verdicts: Verdicts) -> None:
    """your tests catch events that lack their ending blank line

    What does an SSE parser do with lines that are never followed by a blank line? Compare the
    whole list of events you parse with the exact list you expect.
    """
    assert_caught(verdicts, "no_blank_line")


def test_caught_id_not_advanced(verdicts: Verdicts) -> None:
    """your tests catch an id that does not advance

    Do you assert the ids of the events, not only their data?
    """
    assert_caught(verdicts, "id_not_advanced")


def test_caught_last_event_id_ignored(verdicts: Verdicts) -> None:
    """your tests catch a server that ignores Last-Event-ID

    Send the header a reconnecting browser sends: which ids must come, and which must not?
    """
    assert_caught(verdicts, "last_event_id_ignored")


def test_caught_generator_not_closed(verdicts: Verdicts) -> None:
    """your tests catch a stream that is never cleaned up after its client leaves

    Leave after one event of a long feed, then watch `feed_app.state.open_streams` (a bounded
    wait: it drops asynchronously on a real server).
    """
    assert_caught(verdicts, "generator_not_closed")


def test_caught_error_swallowed(verdicts: Verdicts) -> None:
    """your tests catch a failure reported as `done` instead of `error`

    With `fail_at`, what is the last event, and what must never follow a failure?
    """
    assert_caught(verdicts, "error_swallowed")


def test_caught_no_heartbeat(verdicts: Verdicts) -> None:
    """your tests catch an idle stream without heartbeats

    A parser drops comments: read the raw lines of a stream with a long gap between events.
    """
    assert_caught(verdicts, "no_heartbeat")


def test_caught_buffered(verdicts: Verdicts) -> None:
    """your tests catch a server that builds the whole body before sending it

    When the first event reaches you, is the server's generator still running? No clock is
    needed: `feed_app.state.open_streams` tells you.
    """
    assert_caught(verdicts, "buffered")
