"""``--cpu-report=FILE``: each test's wall time and CPU time, one JSON line per test.

`--durations` gives wall time, which on a loaded machine mostly measures the load. CPU time
(this process plus the children it reaped: kernels, servers, `course check`, Chromium)
is what the suite's budget is about; benchmarks/test_suite_time.py sums it per scope. A child's
CPU counts when it is reaped, so a notebook kernel's lands on the notebook's last item.
Every pytest-xdist worker appends to the same file (one short write per line).

With pytest-xdist, the controller also prints each worker's busy seconds (the sum of its
tests' setup, call and teardown times) at the end, with or without the option: the suite's
wall time is bounded by its busiest worker, so a lopsided schedule shows there
(tests/plugins/schedule.py orders the scopes).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-report",
        metavar="FILE",
        default=None,
        help="append each test's wall and CPU seconds (with its children's) to FILE as JSON lines",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    target = item.config.getoption("--cpu-report")
    if not target:
        yield
        return
    start, wall, cpu = time.time(), time.perf_counter(), _cpu_seconds()
    yield
    line = {
        "nodeid": item.nodeid,
        "start": round(start, 3),
        "wall": round(time.perf_counter() - wall, 3),
        "cpu": round(_cpu_seconds() - cpu, 3),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
    }
    with open(target, "a", encoding="utf-8") as report:
        report.write(json.dumps(line) + "\n")


_busy: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    node = getattr(report, "node", None)  # set by pytest-xdist's controller on workers' reports
    if node is not None:
        _busy[node.gateway.id] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _busy:
        return
    busy = ", ".join(f"{worker} {seconds:.0f} s" for worker, seconds in sorted(_busy.items()))
    terminalreporter.write_line(f"busy time per worker: {busy}")
