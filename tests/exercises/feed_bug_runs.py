"""A pytest plugin for lesson 11's check: run the learner's tests against several feeds at once.

``-p feed_bug_runs`` with ``COURSE_FEED_BUGS=no_blank_line,buffered`` runs every test once
per feed named there (``""`` is the correct feed), in that order, in one pytest session:
``test_x[buffered]``; :func:`split_nodeid` reads the test and the feed back. The test's ``feed_app`` fixture reads ``COURSE_FEED_BUG``, which an
autouse fixture sets for each run. One session instead of one per bug: on a loaded machine
a pytest process costs seconds of CPU before its first test (imports), while the tests
themselves mostly wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

BUG_ENV = "COURSE_FEED_BUG"  # what the exercise's feed_app fixture reads
BUGS_ENV = "COURSE_FEED_BUGS"  # the feeds to run, comma-separated
CORRECT_ID = "correct"  # the test id of the correct feed ("" is no readable id)


def feeds() -> list[str]:
    return os.environ.get(BUGS_ENV, "").split(",")


def feed_id(bug: str) -> str:
    return bug or CORRECT_ID


def split_nodeid(nodeid: str, bugs: list[str]) -> tuple[str, str]:
    """``(test name, bug)`` of ``path::test_x[buffered]`` (the learner's own ids are kept)."""
    name = nodeid.rpartition("::")[2]
    base, _, ids = name.partition("[")
    parts = ids.removesuffix("]").split("-") if ids else []
    wanted = {feed_id(bug): bug for bug in bugs}
    bug = next((wanted[part] for part in parts if part in wanted), "")
    rest = [part for part in parts if part != feed_id(bug)]
    return (f"{base}[{'-'.join(rest)}]" if rest else base), bug


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "_planted_feed_bug" in metafunc.fixturenames:
        metafunc.parametrize("_planted_feed_bug", feeds(), ids=feed_id, indirect=True)


@pytest.fixture(autouse=True)
def _planted_feed_bug(request: pytest.FixtureRequest) -> Iterator[str]:
    """Set ``COURSE_FEED_BUG`` before the test's own fixtures build the app."""
    bug = getattr(request, "param", "")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BUG_ENV, bug)
        yield bug


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """All tests against one feed, then all against the next: a timeout, which ends the
    session, leaves whole feeds not run (the check runs those again on their own)."""
    order = {feed_id(bug): n for n, bug in enumerate(feeds())}

    def feed_of(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        bug = callspec.params.get("_planted_feed_bug", "") if callspec else ""
        return order.get(feed_id(bug), 0)

    items.sort(key=feed_of)  # stable: each feed's tests keep their order
