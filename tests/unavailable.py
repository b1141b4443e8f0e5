"""A test that needs a program this machine lacks: skipped on a learner's machine, failed
in CI (`CI` set), where every program the course uses must be installed and tested."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip with ``message`` (what to install); fail with it in CI."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
