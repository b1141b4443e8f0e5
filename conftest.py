"""Settings for every test run, notebooks included (nbval's kernels inherit this environment)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from course_app.checking import EXERCISES_DIR_ENV, write_stubs
from course_app.runtime.pace import TEST_PACE

pytest_plugins = [
    "tests.plugins.notebook_rerun",  # each notebook's second Run All, in nbval's kernel
    "tests.plugins.cpu_report",  # --cpu-report=FILE: wall and CPU seconds per test
    "tests.plugins.schedule",  # longest scopes first on pytest-xdist's workers
    "tests.plugins.programs",  # a notebook needing a missing program: skipped (not in CI)
    "tests.plugins.kernel_start",  # a kernel that dies while starting: once more, with why
]

# Demo delays near zero: printed outputs do not depend on the pace, only the run time does.
# `course check` runs exercise tests at the same pace (course_app.runtime.pace.TEST_PACE).
os.environ["COURSE_PACE"] = str(TEST_PACE)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        choices=("exercises", "solutions"),
        default=None,
        help="run tests/exercises against exercises/ or solutions/ (default: $COURSE_TARGET)",
    )


def pytest_configure(config: pytest.Config) -> None:
    target = config.getoption("--target", default=None)
    if target:
        os.environ["COURSE_TARGET"] = target
    if target or os.environ.get("COURSE_TARGET"):
        return  # an explicit choice (`--target`, or the checker's own pytest run)
    # The suite checks the course, not the learner's work: the "exercises" it runs (the
    # stub-fails checks, each notebook's check cell) are stubs freshly generated from
    # solutions/, so `make test` passes whatever state exercises/ is in.
    stubs = tempfile.mkdtemp(prefix="course-stubs-")
    write_stubs(Path(stubs), quiet=True)
    os.environ[EXERCISES_DIR_ENV] = stubs
    config.add_cleanup(lambda: shutil.rmtree(stubs, ignore_errors=True))
