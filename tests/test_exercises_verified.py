"""rustlings' checks: every lesson's stub is generated, has a TODO and fails its tests, and
the reference solution passes them through `course check` itself, at the checker's pace.

The suite checks the course, never a learner's work: the "exercises" it runs are stubs
generated afresh from solutions/ (the root conftest.py points $COURSE_EXERCISES_DIR at
them), so `make test` passes whatever state a learner's exercises/ folder is in.
"""

from __future__ import annotations

import ast
import os

import pytest

from course_app.checking import Lesson, load_lessons, run_check, stub_for
from course_app.checking.pytest_report import split_docstring

LESSONS = load_lessons()


class _LessonChecks:
    """One class per lesson, so that pytest-xdist's `--dist loadscope` spreads the lessons."""

    lesson: Lesson

    def test_lesson_has_all_four_files(self) -> None:
        lesson = self.lesson
        missing = [
            kind
            for kind in ("notebook", "exercise", "solution", "test")
            if not lesson.path(kind).exists()
        ]
        assert not missing, f"lesson {lesson.number} is missing its {', '.join(missing)} file(s)"

    def test_committed_stub_is_generated_from_the_solution(self) -> None:
        lesson = self.lesson
        stub = stub_for(lesson)
        assert "TODO" in stub, "the stub must tell the learner what to do with a TODO"
        current = lesson.path("exercise").read_text(encoding="utf-8")
        if current != stub and not os.environ.get("CI"):
            # On a learner's clone exercises/ holds their work; CI runs on a clean clone.
            pytest.skip(f"exercises/{lesson.stem}.py is not the stub (your work?); CI checks it")
        assert current == stub, "exercises/ is out of date: run `make stubs`"

    def test_untouched_stub_fails_its_check(self) -> None:
        assert os.environ.get("COURSE_EXERCISES_DIR"), "the root conftest.py generates the stubs"
        result = run_check(self.lesson.number, "exercises")
        assert not result.problem, result.problem
        assert result.outcomes, "no exercise tests were collected"
        assert not result.ok, "the untouched stub passes every test: add a test it fails"

    def test_solution_passes_its_check(self) -> None:
        """What `course check NN --solutions` says: the same subprocess, pace and timeouts."""
        result = run_check(self.lesson.number, "solutions")
        assert result.ok, result.render(with_hint=False)

    def test_every_exercise_test_has_a_label_and_a_hint(self) -> None:
        """`course check` prints the label; `course hint` prints the hint of each failing test."""
        lesson = self.lesson
        missing = [name for name, doc in _exercise_tests(lesson) if not all(split_docstring(doc))]
        assert not missing, (
            f"tests/exercises/test_{lesson.stem}.py: give these tests a docstring with a label"
            f" line, a blank line and a hint (guiding questions): {', '.join(missing)}"
        )


for _lesson in LESSONS:
    _name = f"Test_{_lesson.stem}"
    globals()[_name] = type(_name, (_LessonChecks,), {"lesson": _lesson})


def test_hints_are_written() -> None:
    for lesson in LESSONS:
        assert lesson.hint and "to be written" not in lesson.hint, (
            f"lesson {lesson.number} has no hint"
        )


def _exercise_tests(lesson: Lesson) -> list[tuple[str, str | None]]:
    """``(name, docstring)`` of each top-level test, read without importing the module."""
    tree = ast.parse(lesson.path("test").read_text(encoding="utf-8"))
    return [
        (node.name, ast.get_docstring(node, clean=False))
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    ]
