"""tests/plugins/programs.py: a notebook that needs a missing program is skipped, named."""

from __future__ import annotations

import pytest

from course_app.checking import load_lessons
from tests.plugins.programs import PROGRAMS, missing_programs


def test_every_program_named_in_lessons_toml_is_known() -> None:
    for lesson in load_lessons():
        missing_programs(lesson.programs)  # raises for an unknown name


def test_an_unknown_program_is_an_error_not_a_silent_pass() -> None:
    with pytest.raises(ValueError, match="redis"):
        missing_programs(("redis",))


def test_a_missing_program_is_named_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COURSE_REDIS_SERVER", "/nonexistent/redis-server")
    monkeypatch.setenv("COURSE_NGINX", "/nonexistent/nginx")
    problems = missing_programs(("redis-server", "nginx"))
    assert len(problems) == 2
    assert problems[0].startswith("redis-server: install it")
    assert problems[1].startswith("nginx: install it")


def test_the_notebooks_that_need_a_program_say_so() -> None:
    # Their stored outputs were checked without each program (09: Redis cells differ; 11:
    # a browser test's report; 12: nginx, Chromium, Next.js; 13: Redis and the AI SDK).
    programs = {lesson.number: set(lesson.programs) for lesson in load_lessons()}
    assert programs["09"] >= {"redis-server"}
    assert programs["11"] >= {"chromium"}
    assert programs["12"] >= {"nginx", "chromium", "nextjs"}
    assert programs["13"] >= {"redis-server", "ai-sdk"}
    assert set().union(*programs.values()) <= set(PROGRAMS)
