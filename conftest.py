"""Settings for every test run, notebooks included (nbval's kernels inherit this environment)."""

import os

import pytest

# Demo delays near zero: printed outputs do not depend on the pace, only the run time does.
os.environ.setdefault("COURSE_PACE", "0.02")


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
