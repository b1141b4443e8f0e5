"""course_app's rooms import one way, and lessons import from a room, not from inside it.

ARCHITECTURE.md draws the rooms; this test is the drawing's guard. A lower room importing
a higher one (``runtime`` importing ``demos``, say) fails here, naming the file and line.
"""

from __future__ import annotations

import ast
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_app"

# What each room may import besides itself (ARCHITECTURE.md, "The rooms").
MAY_IMPORT: dict[str, set[str]] = {
    "runtime": set(),
    "services": {"runtime"},
    "streams": {"services", "runtime"},
    "fake_openai": {"streams", "runtime"},
    "demos": {"streams", "services", "runtime"},
    "checking": {"runtime"},
    "cli": {"checking", "runtime"},
}
ROOMS = sorted(set(MAY_IMPORT) - {"cli"})
SHARED = {"_exports"}  # the lazy re-export helper every room's __init__ uses


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every ``course_app`` module or name a source imports."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def room_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] != "course_app" or len(parts) < 2:
        return None
    return "cli" if parts[1] == "cli" else parts[1]


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_lives_in_a_room() -> None:
    loose = [
        path.name for path in PACKAGE.glob("*.py") if path.stem not in {"__init__", "cli", *SHARED}
    ]
    assert loose == [], f"put these modules in one of the rooms {ROOMS}: {loose}"


@pytest.mark.parametrize("path", package_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_rooms_import_one_way(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    here = "cli" if relative.parts == ("cli.py",) else relative.parts[0]
    if here.endswith(".py"):  # course_app/__init__.py, _exports.py
        allowed: set[str] = set(SHARED)
    else:
        allowed = {here, *MAY_IMPORT[here], *SHARED}
    wrong = [
        f"{relative}:{line} imports {name}"
        for line, name in imported_modules(path.read_text(encoding="utf-8"))
        if (room := room_of(name)) is not None and room not in allowed
    ]
    assert wrong == [], f"{here} may import only {sorted(allowed)}: " + "; ".join(wrong)


def test_only_checking_knows_the_report_format() -> None:
    knows = [
        str(path.relative_to(ROOT))
        for path in [*package_files(), *ROOT.joinpath("tests").rglob("*.py")]
        if "pytest_report" in path.read_text(encoding="utf-8")
        and path.relative_to(PACKAGE if PACKAGE in path.parents else ROOT).parts[0]
        not in {"checking", "tests"}
    ]
    assert knows == []


def lesson_sources() -> Iterator[tuple[str, str]]:
    """(name, code) of each notebook code cell, solution and exercise stub."""
    for notebook in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for number, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                lines = [line for line in source.splitlines() if not line.startswith(("%", "!"))]
                yield f"{notebook.name} cell {number}", "\n".join(lines)
    for folder in ("solutions", "exercises"):
        for path in sorted(ROOT.glob(f"{folder}/[0-9]*.py")):
            yield f"{folder}/{path.name}", path.read_text(encoding="utf-8")


def test_lessons_import_from_a_room_not_from_inside_it() -> None:
    """``from course_app.runtime import serve``, not ``from course_app.runtime.server ...``.

    Demos are the exception by design: each demo module is one lesson's app.
    """
    inside = []
    for where, source in lesson_sources():
        try:
            imports = list(imported_modules(source))
        except SyntaxError:  # a learner's half-written exercise
            continue
        for _, name in imports:
            parts = name.split(".")
            if parts[0] != "course_app" or room_of(name) in {"demos", "cli"}:
                continue
            room = PACKAGE / parts[1]
            if len(parts) > 3 or (
                len(parts) == 3
                and (room / f"{parts[2]}.py").exists()
                and parts[2] not in {"pace", "ui_message_stream"}
            ):
                inside.append(f"{where}: {name}")
    assert inside == []


def test_every_room_is_packaged() -> None:
    """pyproject.toml lists each room, so a non-editable install has them too."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packaged = set(config["tool"]["setuptools"]["packages"])
    assert {f"course_app.{room}" for room in ROOMS} <= packaged


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imports_none_of_its_modules_until_a_name_is_used(room: str) -> None:
    """Importing a room is cheap: ``course check`` and each lesson pay for what they use."""
    import subprocess
    import sys

    script = (
        f"import sys, course_app.{room}; "
        f"print(sorted(m for m in sys.modules if m.startswith('course_app.{room}.')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("room", [room for room in ROOMS if room != "demos"])
def test_every_exported_name_exists(room: str) -> None:
    import importlib

    package = importlib.import_module(f"course_app.{room}")
    for module, names in package.EXPORTS.items():
        defined = vars(importlib.import_module(f"course_app.{room}.{module}"))
        assert [name for name in names if name not in defined] == [], module
