"""Check a learner's exercise: run its tests, print pass/fail per test and a hint.

The same code serves ``course check NN`` in a terminal and ``check("NN")`` in a notebook
cell. Tests run in a fresh ``python -m pytest`` subprocess (a few side by side when some are
marked ``own_session``), so an edited exercise file is re-imported every time and nothing a
test does can crash or hang the notebook's kernel.
In a notebook, :func:`check` never raises: "Run All" gets past an unsolved exercise.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from course_app.checking.exercise_loader import TARGET_ENV
from course_app.checking.manifest import Lesson, UnknownLessonError, find_lesson, load_lessons
from course_app.checking.pytest_report import MARKS, is_timeout_message, run_reported
from course_app.runtime import course_root
from course_app.runtime.pace import TEST_PACE

# The whole run; one test gets TEST_TIMEOUT (an endless loop stops the run after the first).
CHECK_TIMEOUT = 180.0
TEST_TIMEOUT = 15
TEST_TIMEOUT_ENV = "COURSE_TEST_TIMEOUT"
# A check marked `@pytest.mark.own_session` takes long on its own (it waits on a real clock:
# nginx's read timeout, a library's shutdown poll; or Hypothesis searches and shrinks): it
# runs in a pytest session of its own, at the same time as the others, so that the waits
# overlap instead of adding up (and a search gets the second core).
OWN_SESSION = "own_session"
_OWN_SESSION_TEST = re.compile(rf"^@pytest\.mark\.{OWN_SESSION}\b.*\n(?:@.*\n)*def (\w+)\(", re.M)


@dataclass(frozen=True)
class TestOutcome:
    nodeid: str
    label: str
    outcome: str  # passed, failed, error, skipped, "not run" (after a timeout)
    reason: str = ""
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def lesson_number(self) -> str:
        # tests/exercises/test_03_sse_protocol.py::test_x -> "03"
        return Path(self.nodeid.split("::")[0]).name.removeprefix("test_")[:2]


@dataclass
class CheckResult:
    lesson: Lesson
    target: str
    outcomes: list[TestOutcome] = field(default_factory=list)
    problem: str = ""  # set when the tests could not run at all

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def skipped(self) -> int:
        return sum(o.outcome == "skipped" for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """Every check that ran passed: a check skipped for a missing tool (nginx, Redis,
        Chromium) says so on its SKIP line and does not hold the learner back."""
        return (
            not self.problem
            and self.passed > 0
            and self.passed + self.skipped == len(self.outcomes)
        )

    def render(self, *, with_hint: bool = True) -> str:
        lesson = self.lesson
        lines = [f"Checking lesson {lesson.number} ({self.target}/{lesson.stem}.py)"]
        if self.problem:
            lines.append(f"  could not run the checks: {self.problem}")
        reasons = {o.reason for o in self.outcomes if not o.passed}
        import_failure = len(reasons) == 1 and "ExerciseImportError" in next(iter(reasons))
        if import_failure:
            lines.append(
                "  "
                + next(iter(reasons)).removeprefix(
                    "course_app.checking.exercise_loader.ExerciseImportError: "
                )
            )
        else:
            for o in self.outcomes:
                mark = MARKS.get(o.outcome, "FAIL")
                lines.append(f"  {mark}  {o.label}")
                if not o.passed and o.reason:
                    lines.extend(f"        {line}" for line in o.reason.splitlines())
        total = len(self.outcomes)
        if self.ok and self.skipped:
            lines.append(
                f"{self.passed} of {total} checks pass and {self.skipped} could not run here"
                " (see SKIP). Well done!"
            )
            return "\n".join(lines)
        if self.ok:
            lines.append(f"All {total} checks pass. Well done!")
            return "\n".join(lines)
        lines.append(f"{self.passed} of {total} checks pass.")
        if not_run := sum(o.outcome == "not run" for o in self.outcomes):
            lines.append(
                f"{not_run} checks did not run: a check timed out, which usually means an"
                " endless loop. Fix that one first."
            )
        if with_hint and self.outcomes:
            lines.append(
                f"Stuck? `course hint {lesson.number}` in a terminal, or"
                f' hint("{lesson.number}") in a cell, gives hints for the failing checks.'
            )
        return "\n".join(lines)

    def render_hints(self) -> str:
        """Hints for the failing checks (each test's own), then the lesson's questions."""
        lesson = self.lesson
        lines = [f"Hints for lesson {lesson.number} ({lesson.title})"]
        failing = [o for o in self.outcomes if not o.passed and o.outcome != "skipped"]
        if self.problem:
            lines.append(f"  (could not run the checks: {self.problem})")
        elif self.ok:
            lines.append("  Every check passes: nothing left to hint at. Compare with solutions/.")
        elif len({o.reason for o in failing}) == 1 and "ExerciseImportError" in failing[0].reason:
            lines.append("  Your file does not import yet; fix this first:")
            lines.append("  " + failing[0].reason.removeprefix(
                "course_app.checking.exercise_loader.ExerciseImportError: "
            ))  # fmt: skip
        seen: set[str] = set()
        for o in failing:
            if o.hint and o.hint not in seen:
                seen.add(o.hint)
                lines.append(f"\n  {o.label}")
                lines.extend(f"    {line}" for line in o.hint.splitlines())
        if lesson.hint:
            lines.append("\nQuestions to guide the whole exercise:")
            lines.extend(f"  {line}" for line in lesson.hint.splitlines())
        return "\n".join(lines)


def run_tests(
    test_paths: list[Path], target: str, root: Path | None = None
) -> tuple[list[TestOutcome], str]:
    """Run pytest on ``test_paths`` against ``target``; returns outcomes and a problem text."""
    # The suite's pace: every verdict the checker gives is one CI has proven.
    env = {
        TARGET_ENV: target,
        "COURSE_PACE": str(TEST_PACE),
        TEST_TIMEOUT_ENV: os.environ.get(TEST_TIMEOUT_ENV, str(TEST_TIMEOUT)),
    }
    cwd = root or course_root()
    sessions = [["-p", "no:hypothesispytest", *[str(p) for p in test_paths]]]
    for path in test_paths:
        for name in own_session_tests(path):
            sessions.append(["-p", "no:hypothesispytest", f"{path}::{name}"])
    if len(sessions) > 1:  # (not --deselect: it drops every test whose name starts so)
        sessions[0] += ["-m", f"not {OWN_SESSION}"]
    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        runs = list(
            pool.map(
                lambda args: run_reported(args, cwd=cwd, env=env, timeout=CHECK_TIMEOUT),
                sessions,
            )
        )
    problem = next((problem for _, problem in runs if problem), "")
    rows = [row for session_rows, _ in runs for row in session_rows]
    if len(sessions) > 1:
        rows = in_file_order(rows, test_paths)
    return [TestOutcome(**row) for row in rows], problem


def own_session_tests(test_path: Path) -> list[str]:
    """The tests in ``test_path`` marked ``@pytest.mark.own_session`` (see OWN_SESSION)."""
    return _OWN_SESSION_TEST.findall(test_path.read_text(encoding="utf-8"))


def in_file_order(rows: list[dict[str, str]], test_paths: list[Path]) -> list[dict[str, str]]:
    """Rows of several sessions as one session would have given them: in the order the
    tests are defined, and after a check that timed out the later ones "not run" (one
    session stops at a timeout, see pytest_report)."""
    defined: dict[str, int] = {}
    for path in test_paths:
        for name in re.findall(r"^def (test_\w+)\(", path.read_text(encoding="utf-8"), re.M):
            defined.setdefault(name, len(defined))

    def position(row: dict[str, str]) -> int:
        name = row["nodeid"].rpartition("::")[2].partition("[")[0]
        return defined.get(name, len(defined))

    ordered = sorted(rows, key=position)  # stable: a test's cases keep their order
    stopped = False
    for index, row in enumerate(ordered):
        if stopped and row["outcome"] != "not run":
            ordered[index] = {**row, "outcome": "not run", "reason": ""}
        timed_out = row["outcome"] != "passed" and is_timeout_message(row["reason"])
        stopped = stopped or row["outcome"] == "not run" or timed_out
    return ordered


def run_check(lesson_ref: str | int, target: str = "exercises") -> CheckResult:
    """Run one lesson's exercise tests; raises UnknownLessonError for a bad number."""
    lesson = find_lesson(lesson_ref)
    test_file = lesson.path("test")
    if not test_file.exists():
        return CheckResult(lesson, target, problem=f"no tests for lesson {lesson.number} yet")
    outcomes, problem = run_tests([test_file], target)
    return CheckResult(lesson, target, outcomes, problem)


def check(lesson_ref: str | int, *, target: str = "exercises") -> None:
    """Notebook check cell: print the result, never raise."""
    try:
        result = run_check(lesson_ref, target)
    except UnknownLessonError as exc:
        print(f"Cannot check: {exc}")
        return
    except Exception as exc:  # the check cell must never break "Run All"
        print(f"Cannot check lesson {lesson_ref}: {type(exc).__name__}: {exc}")
        return
    print(result.render())


def hint(lesson_ref: str | int, *, target: str = "exercises") -> None:
    """Notebook hint cell: hints for the checks that fail now; never raises."""
    try:
        result = run_check(lesson_ref, target)
    except UnknownLessonError as exc:
        print(f"No hint: {exc}")
        return
    except Exception as exc:  # a hint cell must never break "Run All" either
        print(f"No hint for lesson {lesson_ref}: {type(exc).__name__}: {exc}")
        return
    print(result.render_hints())


# `course progress` checks this many lessons at once: most checks wait (on a stream, a
# server, a timeout a stub runs into) far more than they compute.
PROGRESS_AT_ONCE = 4


def progress(target: str = "exercises") -> list[CheckResult]:
    """Check every lesson, as ``course check NN`` would, several at once.

    Each lesson is a pytest run of its own (a fork of the warm worker costs little): the
    whole takes about as long as the slowest lessons, not as long as all of them, and one
    lesson's endless loop stops only that lesson's checks.
    """
    lessons = [lesson for lesson in load_lessons() if lesson.path("test").exists()]
    with ThreadPoolExecutor(max_workers=PROGRESS_AT_ONCE) as pool:
        return list(pool.map(lambda lesson: run_check(lesson.number, target), lessons))
