"""Exercise stubs are generated from the reference solutions, so the two never drift.

A solution marks what the learner writes between two comment lines (nbgrader's markers)::

    def countdown(start: int) -> Iterator[str]:
        # TODO: yield start, start - 1, ..., 1, then "liftoff".
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

and the stub keeps everything else, replacing the block by a ``raise NotImplementedError``.
Lines in the block that start with ``### STUB:`` replace that default, for stubs that must
keep some code (``### STUB: return []``).

``python -m course_app.checking.stubs`` rewrites ``exercises/`` from ``solutions/``; a test checks
that the committed stubs are in sync, and ``course reset NN`` uses :func:`make_stub` to
restore one file. ``python -m course_app.checking.stubs --out DIR`` writes the stubs elsewhere: the
test suite checks those, so it passes whatever state a learner's ``exercises/`` is in.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from course_app.checking.manifest import Lesson, load_lessons

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = "### STUB:"
_YIELD = re.compile(r"^\s*(?!#).*\byield\b", re.MULTILINE)
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)")


class StubMarkerError(ValueError):
    """A solution file's markers are unbalanced."""


def make_stub(solution: str, *, name: str = "solution") -> str:
    """The exercise text for a solution text."""
    out: list[str] = []
    block: list[str] | None = None
    indent = ""
    body = ""
    function = ""
    for number, line in enumerate(solution.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if block is not None:
                raise StubMarkerError(f"{name}:{number}: {BEGIN} inside another block")
            block, indent = [], line[: len(line) - len(line.lstrip())]
        elif stripped == END:
            if block is None:
                raise StubMarkerError(f"{name}:{number}: {END} without {BEGIN}")
            todo = f"TODO: write {function}()" if function else "TODO"
            default = [f'{indent}raise NotImplementedError("{todo}")\n']
            if _YIELD.search(body):
                # Without a yield the stub would be a plain function, and a test would fail
                # with a puzzling TypeError instead of this NotImplementedError.
                default.append(f"{indent}yield  # keeps this a generator; replace both lines\n")
            out.extend(block or default)
            block, body = None, ""
        elif block is not None:
            body += line
            if stripped.startswith(STUB):
                block.append(f"{indent}{stripped[len(STUB) :].strip()}\n")
        else:
            if match := _DEF.match(line):
                function = match.group(1)
            out.append(line)
    if block is not None:
        raise StubMarkerError(f"{name}: {BEGIN} is never closed")
    return "".join(out)


def stub_for(lesson: Lesson) -> str:
    solution = lesson.path("solution")
    return make_stub(solution.read_text(encoding="utf-8"), name=str(solution.name))


def write_stubs(out: Path | None = None, *, quiet: bool = False) -> Path:
    """Write every lesson's stub into ``out`` (default: the checkout's ``exercises/``)."""
    lessons = [lesson for lesson in load_lessons() if lesson.path("solution").exists()]
    folder = out or lessons[0].path("exercise").parent
    folder.mkdir(parents=True, exist_ok=True)
    for lesson in lessons:
        target = folder / lesson.path("exercise").name
        text = stub_for(lesson)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            if not quiet:
                print(f"wrote {target.parent.name}/{target.name}")
    return folder


def main(argv: list[str] | None = None) -> int:
    """Regenerate every exercise stub from its solution."""
    parser = argparse.ArgumentParser(
        prog="python -m course_app.checking.stubs", description=main.__doc__
    )
    parser.add_argument("--out", type=Path, help="write the stubs here instead of exercises/")
    args = parser.parse_args(argv)
    write_stubs(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
