"""Import a lesson's exercise (the learner's file) or its reference solution.

File names start with a digit (``03_sse_protocol.py``), so they cannot be imported with an
``import`` statement; this loads them by path, fresh every time, and turns any failure into
one readable line instead of a traceback wall.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from course_app.runtime import course_root

TARGET_ENV = "COURSE_TARGET"
TARGETS = ("exercises", "solutions")
# Where the `exercises` target lives, when not in the checkout's exercises/ folder. The test
# suite points it at freshly generated stubs, so it checks the course, not a learner's work.
EXERCISES_DIR_ENV = "COURSE_EXERCISES_DIR"


class ExerciseImportError(ImportError):
    """The exercise file does not import; the message says where and why."""


def current_target() -> str:
    """``exercises`` (the learner's files) or ``solutions``, from ``$COURSE_TARGET``."""
    target = os.environ.get(TARGET_ENV, "solutions")
    if target not in TARGETS:
        raise ValueError(f"{TARGET_ENV} must be 'exercises' or 'solutions', not {target!r}")
    return target


def target_dir(target: str, root: Path | None = None) -> Path:
    """The folder a target's files are loaded from (``$COURSE_EXERCISES_DIR`` for exercises)."""
    override = os.environ.get(EXERCISES_DIR_ENV)
    if target == "exercises" and override:
        return Path(override)
    return (root or course_root()) / target


def load_exercise(stem: str, target: str | None = None, root: Path | None = None) -> ModuleType:
    """Load ``<target>/<stem>.py`` as a new module named ``<target>_<stem>``."""
    target = target or current_target()
    path = target_dir(target, root) / f"{stem}.py"
    shown = f"{target}/{stem}.py"
    if not path.exists():
        raise ExerciseImportError(
            f"{shown} does not exist (restore it with: course reset {stem[:2]})"
        )
    name = f"{target}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ExerciseImportError(
            f"{shown} has a syntax error on line {exc.lineno}: {exc.msg}"
        ) from None
    except Exception as exc:
        del sys.modules[name]
        line = _line_in(path, exc)
        where = f" (line {line})" if line else ""
        raise ExerciseImportError(
            f"{shown} fails on import{where}: {type(exc).__name__}: {exc}"
        ) from None
    return module


def _line_in(path: Path, exc: BaseException) -> int | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return frames[-1].lineno if frames else None
