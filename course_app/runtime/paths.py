"""Where the course's folders are.

The course is installed in editable mode, so the checkout is the parent of this package.
``COURSE_ROOT`` overrides it (the CLI's own tests use a temporary copy).
"""

import os
from pathlib import Path


def course_root() -> Path:
    """The folder that holds ``notebooks/``, ``exercises/``, ``solutions/`` and ``tests/``."""
    override = os.environ.get("COURSE_ROOT")
    return Path(override).resolve() if override else Path(__file__).resolve().parents[2]
