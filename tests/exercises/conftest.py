"""Exercise tests load the module under test through the ``exercise`` fixture.

``tests/exercises/test_03_sse_protocol.py`` gets ``exercises/03_sse_protocol.py`` or
``solutions/03_sse_protocol.py``, as ``--target`` / ``$COURSE_TARGET`` says (default:
solutions, so a plain ``pytest`` on a fresh checkout is green; ``course check`` runs the
same tests against exercises/).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from course_app.checking import load_exercise

# A learner's endless loop fails one test with a clear message instead of hanging the check.
# `course check` sets a shorter one (course_app.checking.checker.TEST_TIMEOUT) and stops at the first.
EXERCISE_TEST_TIMEOUT = int(os.environ.get("COURSE_TEST_TIMEOUT", "30"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "own_session: `course check` runs this test in a pytest session of its own, beside"
        " the others (course_app.checking.checker.OWN_SESSION)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every item of the session, not only this folder's: notebooks and the
    # run-twice test keep the longer timeout from pyproject.toml.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(EXERCISE_TEST_TIMEOUT))


@pytest.fixture(scope="module")
def exercise(request: pytest.FixtureRequest) -> ModuleType:
    stem = Path(request.module.__file__).stem.removeprefix("test_")
    return load_exercise(stem)
