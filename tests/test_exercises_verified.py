"""rustlings' unsolved check: every lesson's stub is generated, has a TODO and fails its tests.

That every *solution* passes is shown by tests/exercises itself, which runs against
solutions/ in this suite.
"""

from __future__ import annotations

import pytest

from course_app.checker import run_check
from course_app.manifest import Lesson, load_lessons
from course_app.stubs import stub_for

LESSONS = load_lessons()


def _ids(lessons: list[Lesson]) -> list[str]:
    return [lesson.stem for lesson in lessons]


@pytest.mark.parametrize("lesson", LESSONS, ids=_ids(LESSONS))
def test_lesson_has_all_four_files(lesson: Lesson) -> None:
    missing = [
        kind
        for kind in ("notebook", "exercise", "solution", "test")
        if not lesson.path(kind).exists()
    ]
    assert not missing, f"lesson {lesson.number} is missing its {', '.join(missing)} file(s)"


@pytest.mark.parametrize("lesson", LESSONS, ids=_ids(LESSONS))
def test_stub_is_generated_from_the_solution(lesson: Lesson) -> None:
    current = lesson.path("exercise").read_text(encoding="utf-8")
    assert current == stub_for(lesson), "exercises/ is out of date: run `make stubs`"
    assert "TODO" in current, "the stub must tell the learner what to do with a TODO"


@pytest.mark.parametrize("lesson", LESSONS, ids=_ids(LESSONS))
def test_untouched_stub_fails_its_tests(lesson: Lesson) -> None:
    result = run_check(lesson.number, "exercises")
    assert not result.problem, result.problem
    assert result.outcomes, "no exercise tests were collected"
    assert not result.ok, "the untouched stub passes every test: add a test it fails"


def test_hints_are_written() -> None:
    for lesson in LESSONS:
        assert lesson.hint and "to be written" not in lesson.hint, (
            f"lesson {lesson.number} has no hint"
        )
