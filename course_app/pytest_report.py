"""A tiny pytest plugin: write each test's outcome to a JSON file for the checker.

Loaded with ``-p course_app.pytest_report --course-report=FILE``; a test's label is the
first line of its docstring (or its name), and a failure keeps only the one-line reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

_RESULTS: list[dict[str, Any]] = []
_LABELS: dict[str, str] = {}
# Starlette re-raises an endpoint's error inside an ExceptionGroup; show the error itself.
_GROUPED = re.compile(r"^(\w+)\((['\"])(.*)\2\) \[single exception in ExceptionGroup\]$")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--course-report", default=None, help="write test outcomes as JSON here")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        doc = getattr(getattr(item, "obj", None), "__doc__", None)
        label = doc.strip().splitlines()[0] if doc and doc.strip() else item.name
        callspec = getattr(item, "callspec", None)
        if callspec is not None:  # parametrized: say which case
            label += f" [{callspec.id}]"
        _LABELS[item.nodeid] = label


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "failed"
    # pytest's assertion rewriting adds "assert ..." detail lines; one is enough.
    if first.startswith("AssertionError") and len(lines) > 1 and first == "AssertionError":
        first = lines[1].strip()
    if grouped := _GROUPED.match(first):
        first = f"{grouped.group(1)}: {grouped.group(3)}"
    return first[:300]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _RESULTS.append(
            {
                "nodeid": report.nodeid,
                "label": _LABELS.get(report.nodeid, report.nodeid),
                "outcome": "error" if report.when == "setup" and report.failed else report.outcome,
                "reason": "" if report.passed else _reason(report),
            }
        )


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _RESULTS.append(
            {
                "nodeid": report.nodeid,
                "label": report.nodeid,
                "outcome": "error",
                "reason": _reason(report),
            }
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--course-report")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(_RESULTS, out)
