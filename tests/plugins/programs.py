"""Notebooks whose stored outputs need a program this machine lacks are skipped, not failed.

A notebook's committed outputs were made with every program the course uses. Without
redis-server, say, lesson 09's Redis cells print what to install instead of their results,
which is right for a learner reading the notebook but fails nbval's comparison. So on a
learner's machine, the notebook items (nbval's cells and the second Run All) of a lesson whose
``programs`` in lessons.toml include a missing one are skipped with the install hint, as the
other tests that need it are (tests/unavailable.py). In CI (``CI`` set) nothing is skipped:
there every program must be installed, and a missing one fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from course_app.runtime import course_root

NODE_HINT = "install Node.js and npm, then `make lab` again (it installs the course's npm packages)"


# Each says what to install when this machine lacks the program, else None. Imports are
# inside: the root conftest loads this plugin in `course check`'s runs too.
def _chromium() -> str | None:
    from course_app.runtime import CHROMIUM_HINT, chromium_path

    return None if chromium_path() else f"Chromium: {CHROMIUM_HINT}"


def _redis() -> str | None:
    from course_app.services import REDIS_HINT, redis_binary

    return None if redis_binary() else f"redis-server: {REDIS_HINT}"


def _nginx() -> str | None:
    from course_app.services import NGINX_HINT, nginx_available

    return None if nginx_available() else f"nginx: {NGINX_HINT}"


def _openssl() -> str | None:
    return None if shutil.which("openssl") else "openssl: install openssl"


def _ai_sdk() -> str | None:
    stamp = course_root() / "tests" / "node" / "node_modules" / ".installed"
    if shutil.which("node") is None or not stamp.exists():
        return f"the AI SDK client (npm `ai` in tests/node): {NODE_HINT}"
    return None


def _nextjs() -> str | None:
    from course_app.demos.frontend_proxy import next_problem

    return next_problem()


# The names lessons.toml may give in a lesson's `programs`.
PROGRAMS: dict[str, Callable[[], str | None]] = {
    "chromium": _chromium,
    "redis-server": _redis,
    "nginx": _nginx,
    "openssl": _openssl,
    "ai-sdk": _ai_sdk,
    "nextjs": _nextjs,
}


def missing_programs(names: tuple[str, ...]) -> list[str]:
    """What to install for each program in ``names`` that this machine lacks."""
    unknown = [name for name in names if name not in PROGRAMS]
    if unknown:
        raise ValueError(f"lessons.toml names programs the suite does not know: {unknown}")
    return [problem for name in names if (problem := PROGRAMS[name]()) is not None]


@pytest.hookimpl(wrapper=True)  # after every other plugin's: the second Run All's item too
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    yield
    if os.environ.get("CI") or not any(item.path.suffix == ".ipynb" for item in items):
        return
    from course_app.checking import load_lessons

    needs = {lesson.path("notebook").resolve(): lesson.programs for lesson in load_lessons()}
    verdicts: dict[Path, list[str]] = {}
    for item in items:
        path = Path(str(item.path)).resolve()  # nbval's cells and the second Run All
        if path not in needs:
            continue
        if path not in verdicts:
            verdicts[path] = missing_programs(needs[path])
        if verdicts[path]:
            reason = "its stored outputs need " + "; ".join(verdicts[path])
            item.add_marker(pytest.mark.skip(reason=reason))
