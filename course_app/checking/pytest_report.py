"""A tiny pytest plugin: write each test's outcome to a JSON file for the checker.

Loaded with ``-p course_app.checking.pytest_report --course-report=FILE``; :func:`run_reported`
runs pytest with it in a subprocess and reads the file back (the checker, lesson 11's
mutation check and its notebook cells all run tests that way). A test's docstring gives
its label (first line) and its hint (the paragraph after a blank line). A failure keeps what
a learner needs to act on it: the message with pytest's expected-vs-actual detail, the
falsifying input Hypothesis found, and the line of the exercise where the error was raised.
After a test times out (an endless loop, most likely) the run stops: the remaining tests
would each wait for the same timeout.

A failing test's report carries no source listing here: pytest's long traceback parses the
whole file of every frame (Starlette's, anyio's ...) to quote it, seconds per failing test on
a stub, for text nobody reads. The plugin asks for one-line tracebacks and finds the
exercise's line in the exception's own frames, as the long traceback would have shown it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluggy import HookimplMarker

from course_app.checking.warm_worker import Cancelled, run_pytest

if TYPE_CHECKING:  # pytest itself only where the plugin runs: `course check` does not need it
    import pytest
    from _pytest._code.code import ExceptionInfo

hookimpl = HookimplMarker("pytest")  # what pytest.hookimpl is

MAX_DETAIL_LINES = 14
# How a report shows each outcome; anything else (failed, error) is FAIL.
MARKS = {"passed": "PASS", "skipped": "SKIP", "not run": "----"}
MAX_LINE = 220

_RESULTS: list[dict[str, Any]] = []
_ITEMS: dict[str, dict[str, str]] = {}
_WHERE: dict[tuple[str, str], str] = {}  # (nodeid, when) -> "exercises/03_x.py:42"
_SESSION: list[pytest.Session] = []
# Starlette re-raises an endpoint's error inside an ExceptionGroup; show the error itself.
_GROUPED = re.compile(r"^(\w+)\((['\"])(.*)\2\) \[single exception in ExceptionGroup\]$")
# pytest's advice for its own terminal, meaningless in a check report; and Hypothesis'
# replay blob, printed only when it detects CI (so a stored notebook output would differ).
_NOISE = ("Use -v to get more diff", "Use -vv to get more diff", "Full diff:")
_NOISE_PREFIXES = ("You can reproduce this test case by temporarily adding @reproduce_failure",)


def drop_noise(lines: list[str]) -> list[str]:
    """``lines`` without blank lines and advice that does not help a learner act."""
    return [
        line
        for line in lines
        if line.strip()
        and line.strip() not in _NOISE
        and not line.strip().startswith(_NOISE_PREFIXES)
    ]


_LESSON_FILE = re.compile(r"(exercises|solutions|course-stubs-\w+)/(\d\d_\w+\.py)$")
# Paths in messages (a module's repr in Hypothesis' failing case): short, and the same on
# every machine, so that a notebook's stored check output does not name this one.
_STUBS_DIR = re.compile(r"[^\s'\"]*/course-stubs-\w+/")
_ROOT = str(Path(__file__).resolve().parents[2]) + "/"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--course-report", default=None, help="write test outcomes as JSON here")


def split_docstring(doc: str | None) -> tuple[str, str]:
    """``(label, hint)`` from a test's docstring: its first line, and what follows."""
    text = inspect.cleandoc(doc or "")
    label, _, rest = text.partition("\n")
    return label.strip(), rest.strip()


def pytest_sessionstart(session: pytest.Session) -> None:
    _SESSION[:] = [session]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        label, hint = split_docstring(getattr(getattr(item, "obj", None), "__doc__", None))
        label = label or getattr(item, "originalname", None) or item.name
        callspec = getattr(item, "callspec", None)
        if callspec is not None:  # parametrized: say which case
            label += f" [{callspec.id}]"
        _ITEMS[item.nodeid] = {"label": label, "hint": hint}


def _lesson_line(path: str | Path, lineno: int) -> str:
    """``exercises/03_x.py:42`` if ``path`` is a lesson's exercise or solution, else ``""``."""
    if match := _LESSON_FILE.search(Path(path).as_posix()):
        folder = "exercises" if match.group(1).startswith("course-stubs") else match.group(1)
        return f"{folder}/{match.group(2)}:{lineno}"
    return ""


def _chain(excinfo: ExceptionInfo[BaseException]) -> list[ExceptionInfo[BaseException]]:
    """The exceptions a long traceback shows entries for, oldest first (pytest's own walk in
    ``FormattedExcinfo.repr_excinfo``: causes, contexts; an exception group shows none)."""
    from _pytest._code.code import ExceptionInfo

    chain: list[ExceptionInfo[BaseException]] = []
    error: BaseException | None = excinfo.value
    info: ExceptionInfo[BaseException] | None = excinfo
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if info is not None and not isinstance(error, BaseExceptionGroup):
            chain.append(info)
        if isinstance(error, BaseExceptionGroup):
            break
        if error.__cause__ is not None:
            error = error.__cause__
        elif error.__context__ is not None and not error.__suppress_context__:
            error = error.__context__
        else:
            break
        info = ExceptionInfo.from_exception(error) if error.__traceback__ else None
    return chain[::-1]


def _where_raised(item: pytest.Item, excinfo: ExceptionInfo[BaseException]) -> str:
    """What :func:`_where` reads from a long traceback, from the exception itself: the
    deepest entry in the lesson's own file, after pytest's filtering (its cut at the test
    function, its hidden frames)."""
    import pytest
    from _pytest._code.code import filter_excinfo_traceback

    if isinstance(excinfo.value, pytest.fail.Exception) and not excinfo.value.pytrace:
        return ""  # pytest shows such a failure as its message alone
    full = item.config.getoption("fulltrace", False)
    tbfilter = False if full else getattr(item, "_traceback_filter", True)
    found = ""
    for info in _chain(excinfo):
        traceback = filter_excinfo_traceback(tbfilter, info)
        if isinstance(info.value, RecursionError):
            index = traceback.recursionindex()
            traceback = traceback[: index + 1] if index is not None else traceback
        for entry in traceback:
            found = _lesson_line(entry.path, entry.lineno + 1) or found
    return found


@hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """One-line tracebacks while pytest builds this test's report (see the module's doc)."""
    if call.excinfo is not None:
        _WHERE[item.nodeid, call.when] = _where_raised(item, call.excinfo)
    option = item.config.option
    style = getattr(option, "tbstyle", "auto")
    option.tbstyle = "line"
    try:
        return (yield)
    finally:
        option.tbstyle = style


def _where(report: pytest.TestReport | pytest.CollectReport) -> str:
    """``exercises/03_x.py:42`` for the deepest traceback entry in the lesson's own file."""
    if (where := _WHERE.get((report.nodeid, getattr(report, "when", "")))) is not None:
        return where  # a test's report (a collection report has no `when`)
    longrepr = report.longrepr
    chain = getattr(longrepr, "chain", None)
    tracebacks = [element[0] for element in chain] if chain else []
    if not tracebacks and hasattr(longrepr, "reprtraceback"):
        tracebacks = [longrepr.reprtraceback]
    found = ""
    for traceback in tracebacks:
        for entry in getattr(traceback, "reprentries", []):
            location = getattr(entry, "reprfileloc", None)
            path = getattr(location, "path", "") or ""
            found = _lesson_line(path, getattr(location, "lineno", 0)) or found
    return found


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):  # (path, line, "Skipped: why")
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    text = _STUBS_DIR.sub("exercises/", text).replace(_ROOT, "")
    lines = drop_noise([line.rstrip() for line in text.strip().splitlines()])
    if not lines:
        return "failed"
    # "AssertionError: assert x == y" reads better as "assert x == y"; pytest.fail()'s
    # "Failed: " says nothing a FAIL line does not.
    lines[0] = lines[0].removeprefix("AssertionError: ")
    if not lines[0].startswith("Failed: DID NOT RAISE"):
        lines[0] = lines[0].removeprefix("Failed: ")
    if lines[0] == "AssertionError" and len(lines) > 1:
        lines = lines[1:]
    if grouped := _GROUPED.match(lines[0]):
        lines[0] = f"{grouped.group(1)}: {grouped.group(3)}"
    if len(lines) > MAX_DETAIL_LINES:
        lines = [
            *lines[: MAX_DETAIL_LINES - 1],
            f"... ({len(lines) - MAX_DETAIL_LINES + 1} more lines)",
        ]
    lines = [line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..." for line in lines]
    # A stub's "TODO: write x()" already says where to look.
    if (where := _where(report)) and "NotImplementedError: TODO" not in lines[0]:
        lines.append(f"(raised at {where})")
    return "\n".join(lines)


def is_timeout_message(message: str) -> bool:
    """Is this pytest-timeout's message (a check stopped at its time limit)?"""
    return "Timeout" in message and "pytest-timeout" in message


def _timed_out(report: pytest.TestReport) -> bool:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash is not None and is_timeout_message(crash.message)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        item = _ITEMS.get(report.nodeid, {})
        _RESULTS.append(
            {
                "nodeid": report.nodeid,
                "label": item.get("label", report.nodeid),
                "hint": item.get("hint", ""),
                "outcome": "error" if report.when == "setup" and report.failed else report.outcome,
                "reason": "" if report.passed else _reason(report),
            }
        )
        if report.failed and _timed_out(report) and _SESSION:
            _SESSION[0].shouldstop = "a check timed out"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _RESULTS.append(
            {
                "nodeid": report.nodeid,
                "label": report.nodeid,
                "hint": "",
                "outcome": "error",
                "reason": _reason(report),
            }
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--course-report")
    if not path:
        return
    ran = {row["nodeid"] for row in _RESULTS}
    not_run = [  # the session's items: deselected tests (--deselect, -k) are not "not run"
        {"nodeid": item.nodeid, "label": _ITEMS[item.nodeid]["label"],
         "hint": _ITEMS[item.nodeid]["hint"], "outcome": "not run", "reason": ""}
        for item in session.items
        if item.nodeid not in ran and item.nodeid in _ITEMS and session.shouldstop
    ]  # fmt: skip
    with open(path, "w", encoding="utf-8") as out:
        json.dump(_RESULTS + not_run, out)


def run_reported(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
    cancel: threading.Event | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Run ``pytest args`` with this plugin in a fresh pytest process (a child of the warm
    worker, see :mod:`course_app.checking.warm_worker`); the rows and a problem text.

    The rows are what the plugin wrote (nodeid, label, hint, outcome, reason); the problem
    text is empty unless pytest could not run, ran too long, or collected nothing. Setting
    ``cancel`` from another thread stops the run: no rows, and the problem "cancelled".
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            "-q", "--no-header", "-p", "no:cacheprovider",
            # Plugins these runs do not need; nbval alone costs ~1.5 s of imports.
            "-p", "no:nbval", "-p", "no:xdist", "-o", "addopts=", "--color=no",
            "-p", "course_app.checking.pytest_report", f"--course-report={report}", *args,
        ]  # fmt: skip
        try:
            environment = {**os.environ, **(env or {})}
            done = run_pytest(command, cwd=cwd, env=environment, timeout=timeout, cancel=cancel)
        except Cancelled:
            return [], "cancelled"
        except subprocess.TimeoutExpired:
            return [], f"the tests took longer than {timeout:.0f} s (an endless loop?)"
        if not report.exists():
            tail = done.output.strip().splitlines()[-1:] or ["no output"]
            return [], f"pytest did not run ({tail[0]})"
        rows = json.loads(report.read_text(encoding="utf-8"))
    if not rows:
        return [], "no tests were collected"
    return rows, ""
