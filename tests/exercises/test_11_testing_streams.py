"""Lesson 11: your tests pass against the correct news feed and catch every planted bug.

The exercise module is a test module: its tests run in pytest sessions of their own, once
against the correct feed and once per bug in ``course_app.demos.news_feed.BUGS`` (the
``COURSE_FEED_BUG`` variable picks it). A bug counts as caught when at least one of your
tests fails against it, and only if all of them pass against the correct feed: a test that
always fails would otherwise "catch" everything. Two bugs are planted where the wrong kind
of test (a clock, a parser that hides comments) cannot see them.

All nine sessions start at once (each is a fork of the checker's warm worker, not a new
interpreter, so nine cost little more than one), and the check takes as long as the slowest
feed, not as long as the sum. The bug sessions are only worth finishing if your tests pass
against the correct feed: when one fails there, the bug sessions are stopped at once.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from feed_bug_runs import BUGS_ENV, split_nodeid

from course_app.checking.pytest_report import run_reported
from course_app.demos.news_feed import BUGS

HERE = Path(__file__).resolve().parent  # feed_bug_runs.py, the plugin the runs load
PYTHONPATH = [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part]
# One of your tests that hangs on a bug fails after this long (and so catches it).
YOUR_TEST_TIMEOUT = 10
ROOT = Path(__file__).resolve().parents[2]
# Your tests against nine feeds (the correct one first, then the bugs) in the first test's
# fixture: more than one exercise test's usual timeout.
pytestmark = pytest.mark.timeout(180)
# Lines of one failing test's reason shown under its name (pytest's expected vs actual).
REASON_LINES = 4
# Two bugs are planted where a plausible but wrong kind of test cannot see them; when they
# go uncaught, the check says why (course_app/demos/news_feed.py explains how they are planted).
BLIND_SPOTS = {
    "heartbeat_as_event": [
        "A parser cannot tell them from comment heartbeats: httpx-sse gives the same empty",
        "`message` event for both. Look at the raw lines: a heartbeat starts with `:`.",
    ],
    "buffered": [
        "This copy builds its body at once, then sends it at the usual pace: the same bytes",
        "arriving at the same moments, so a clock cannot tell. Look at the server's state",
        "(`feed_app.state.open_streams`) at each event you read.",
    ],
}


@dataclass(frozen=True)
class Verdict:
    outcome: str  # passed, failed, error, skipped
    reason: str  # pytest's message, with its expected-vs-actual lines


Verdicts = dict[str, dict[str, Verdict]]  # bug ("" for the correct feed) -> test name -> verdict


def run_your_tests(
    path: Path, bugs: list[str], stop: threading.Event | None = None
) -> dict[str, dict[str, Verdict]]:
    """Run the tests in ``path`` once per feed in ``bugs`` ("" is the correct feed), in one
    pytest session; returns bug -> test name -> verdict. After a test times out the session
    stops, and the feeds after it come back "not run"; so do all of them once ``stop`` is set."""
    rows, problem = run_reported(
        [
            "-o", f"timeout={YOUR_TEST_TIMEOUT}", "--import-mode=importlib",
            # Your tests need no Hypothesis reporting: its plugin costs seconds per run.
            "-p", "no:hypothesispytest", "-p", "feed_bug_runs", str(path),
        ],
        cwd=ROOT,
        env={BUGS_ENV: ",".join(bugs), "PYTHONPATH": os.pathsep.join([str(HERE), *PYTHONPATH])},
        timeout=300,
        cancel=stop,
    )  # fmt: skip
    runs: dict[str, dict[str, Verdict]] = {bug: {} for bug in bugs}
    for row in rows:
        name, bug = split_nodeid(row["nodeid"], bugs)
        runs[bug][name] = Verdict(row["outcome"], row["reason"])
    for bug in bugs:
        if problem or not runs[bug]:
            runs[bug] = {"(your test module)": Verdict("not run", problem or "no tests ran")}
    return runs


def decided(verdicts: dict[str, Verdict]) -> bool:
    """Caught (a test failed), or not (every test ran and passed); else to be run again."""
    outcomes = {verdict.outcome for verdict in verdicts.values()}
    return bool(outcomes - {"passed", "skipped", "not run"}) or "not run" not in outcomes


@pytest.fixture(scope="module")
def verdicts(exercise: ModuleType) -> Verdicts:
    path = Path(exercise.__file__)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=len(BUGS)) as pool:
        # Every bug in a session of its own, while this thread runs the correct feed.
        bug_runs = [pool.submit(run_your_tests, path, [bug], stop) for bug in BUGS]
        correct = run_your_tests(path, [""])[""]
        if any(verdict.outcome != "passed" for verdict in correct.values()):
            stop.set()  # bugs are only worth hunting with tests that pass
            return {"": correct}
        found: Verdicts = {"": correct}
        for run in bug_runs:
            found.update(run.result())
    # A session that stopped early (a test timed out, pytest could not start) leaves its
    # feed undecided: run those again, each on its own, until a round decides none.
    left = [bug for bug in BUGS if not decided(found[bug])]
    while left:
        with ThreadPoolExecutor(max_workers=len(left)) as pool:
            runs = list(pool.map(lambda bug: run_your_tests(path, [bug]), left))
        decided_now = {bug: run[bug] for run in runs for bug in run if decided(run[bug])}
        if not decided_now:  # nothing ran at all: say so rather than loop
            found.update({bug: run[bug] for run in runs for bug in run})
            break
        found.update(decided_now)
        left = [bug for bug in left if bug not in decided_now]
    return found


def describe_failures(verdicts: dict[str, Verdict]) -> list[str]:
    """Each failing test's name, then the first lines of why it failed."""
    lines = []
    for name, verdict in verdicts.items():
        if verdict.outcome == "passed":
            continue
        reason = verdict.reason.splitlines() or [verdict.outcome]
        if reason[0].startswith("NotImplementedError: TODO"):
            lines.append(f"{name}: still a TODO")
            continue
        lines.append(f"{name}:")
        lines.extend(f"    {line}" for line in reason[:REASON_LINES])
        if len(reason) > REASON_LINES:
            lines.append(
                f"    ... (run pytest on your file for the other {len(reason) - REASON_LINES} lines)"
            )
    return lines


def assert_caught(verdicts: Verdicts, bug: str) -> None:
    if bug not in verdicts:
        pytest.fail("not tried yet: first make all your tests pass against the correct feed")
    if all(verdict.outcome == "not run" for verdict in verdicts[bug].values()):
        reasons = sorted({verdict.reason for verdict in verdicts[bug].values()})
        pytest.fail("\n".join(["your tests did not run against this feed:", *reasons]))
    if not any(verdict.outcome != "passed" for verdict in verdicts[bug].values()):
        why = [f"not caught: all your tests pass although {BUGS[bug]}.", *BLIND_SPOTS.get(bug, [])]
        pytest.fail("\n".join(why))


def test_your_tests_pass_against_the_correct_feed(verdicts: Verdicts) -> None:
    """your tests all pass against the correct feed (at least five of them)

    A test that fails against correct code is a false alarm, and it would "catch" every bug.
    Run `pytest exercises/11_testing_streams.py` and read the first failure.
    """
    correct = verdicts[""]
    if failing := describe_failures(correct):
        pytest.fail("\n".join(["these fail against the correct feed:", *failing]))
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

    A parser hides comments: read the raw lines of a stream with a long gap between events.
    """
    assert_caught(verdicts, "no_heartbeat")


def test_caught_heartbeat_as_event(verdicts: Verdicts) -> None:
    """your tests catch heartbeats sent as empty events instead of comments

    Do you count what a parser gives you? httpx-sse makes the same empty `message` event of a
    `: ping` comment (after an id) and of an empty `data:` event, but a browser dispatches
    only the second one, to your page's handler. What do the raw lines between two events
    start with?
    """
    assert_caught(verdicts, "heartbeat_as_event")


def test_caught_buffered(verdicts: Verdicts) -> None:
    """your tests catch a server that builds the whole body before sending it

    Do you time the first event? This copy builds its body at once, then sends it at the
    usual pace: the same bytes at the same moments, so no clock can tell. What does
    `feed_app.state.open_streams` say at each event you read, while the server streams, and
    once the body was built before the first byte?
    """
    assert_caught(verdicts, "buffered")
