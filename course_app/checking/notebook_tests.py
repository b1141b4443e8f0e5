"""Run tests from notebook cells: each test's verdict on one line, and "Run All" never stops.

Lesson 11 is about writing tests, so its cells define real test functions (plain ``assert``,
fixtures received by parameter name) and run them where the learner reads them. pytest
itself cannot collect a cell, and a failing ``assert`` in a cell would stop "Run All".

- :func:`run` calls test functions defined in cells with the fixture values they name and
  prints ``PASS`` or ``FAIL`` per test, with the reason; it never raises. ``async def``
  tests run on an event loop of their own (the kernel's loop is busy running the cell).
- :func:`run_pytest` runs a real pytest in a subprocess on test code given as text, for
  what needs pytest itself: marks and plugins (anyio, pytest-timeout).

pytest rewrites ``assert`` in test files to show the values compared; in a cell, a failing
``assert`` says nothing, so :func:`run` shows the source line that failed instead.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from course_app.checking.pytest_report import MARKS, drop_noise, run_reported, split_docstring

PYTEST_TIMEOUT = 120  # seconds for a whole run_pytest() subprocess
MAX_LINE = 160  # a reason's first line is cut here: some messages run on for a paragraph


def _label(test: Callable[..., Any]) -> str:
    """The docstring's first line, as ``course check`` prints it; else the test's name."""
    return split_docstring(test.__doc__)[0] or test.__name__


def _reason(exc: BaseException) -> list[str]:
    """What failed: the exception's message, or the failing line when it has none."""
    message = str(exc).strip().splitlines()
    first = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
    if len(first) > MAX_LINE:
        first = first[: MAX_LINE - 3] + "..."
    if not message:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames and frames[-1].line:
            first += f" at `{frames[-1].line.strip()}`"
    # Hypothesis adds the failing example as a note.
    notes = [line for note in getattr(exc, "__notes__", []) for line in str(note).splitlines()]
    return [first, *drop_noise(notes)]


def _call(test: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    if inspect.iscoroutinefunction(test):
        # asyncio.run() refuses to run on the kernel's thread, where a loop is running.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, test(**kwargs)).result()
    else:
        test(**kwargs)


def run_in_notebook(*tests: Callable[..., Any], **fixtures: Any) -> None:
    """Call each test with the ``fixtures`` its parameters name; print its verdict."""
    for test in tests:
        names = list(inspect.signature(test).parameters)
        if missing := [name for name in names if name not in fixtures]:
            print(f"  FAIL  {_label(test)}")
            print(f"        no fixture named {', '.join(missing)}")
            continue
        try:
            _call(test, {name: fixtures[name] for name in names})
        except pytest.skip.Exception as exc:
            print(f"  SKIP  {_label(test)}")
            print(f"        {exc}")
        # pytest.fail() and pytest.raises() raise Failed, which is no Exception.
        except (Exception, pytest.fail.Exception) as exc:
            print(f"  FAIL  {_label(test)}")
            for line in _reason(exc):
                print(f"        {line}")
        else:
            print(f"  PASS  {_label(test)}")


def run_pytest(source: str, *options: str) -> None:
    """Run pytest on ``source`` (a test module as text) in a subprocess; print each verdict.

    The module is written as ``test_cell.py`` into a temporary folder, which is also the
    working directory: the course's own pytest configuration does not apply.
    """
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "test_cell.py").write_text(inspect.cleandoc(source) + "\n")
        rows, problem = run_reported(
            [*options, "test_cell.py"], cwd=Path(folder), timeout=PYTEST_TIMEOUT
        )
    if problem:
        print(f"  {problem}")
        return
    for row in rows:
        mark = MARKS.get(row["outcome"], "FAIL")
        print(f"  {mark}  {row['label']}")
        for line in row["reason"].splitlines() if mark == "FAIL" else []:
            print(f"        {line}")
