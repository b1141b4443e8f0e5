"""The course manifest, ``lessons.toml``: lessons in order, with titles and hints.

One lesson number ties four files together (rustlings-style), and this module is the only
place that knows the naming rule::

    notebooks/03_sse_protocol.ipynb   exercises/03_sse_protocol.py
    solutions/03_sse_protocol.py      tests/exercises/test_03_sse_protocol.py
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from course_app.runtime import course_root

MANIFEST = "lessons.toml"


class UnknownLessonError(LookupError):
    """Raised for a lesson number that is not in the manifest."""


@dataclass(frozen=True)
class Lesson:
    number: str
    slug: str
    title: str
    minutes: int
    hint: str
    serve: str | None = None  # "module:attribute" of the app `course serve` runs
    # What `course serve` suggests trying: "/path?query" (curl), "PAGE /path" (a browser),
    # or curl arguments with URL standing for the server's address ("POST URL/jobs -d ...").
    try_paths: tuple[str, ...] = ()
    # Programs besides Python that the notebook's stored outputs were made with ("chromium",
    # "redis-server", "nginx", ...): without one, the test suite skips the notebook's cells
    # on a learner's machine instead of failing them (tests/plugins/programs.py).
    programs: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        return f"{self.number}_{self.slug}"

    def path(self, kind: str, root: Path | None = None) -> Path:
        """``kind`` is one of notebook, exercise, solution, test."""
        root = root or course_root()
        return {
            "notebook": root / "notebooks" / f"{self.stem}.ipynb",
            "exercise": root / "exercises" / f"{self.stem}.py",
            "solution": root / "solutions" / f"{self.stem}.py",
            "test": root / "tests" / "exercises" / f"test_{self.stem}.py",
        }[kind]


def load_lessons(root: Path | None = None) -> list[Lesson]:
    """All lessons in course order."""
    root = root or course_root()
    data = tomllib.loads((root / MANIFEST).read_text(encoding="utf-8"))
    return [
        Lesson(
            number=entry["number"],
            slug=entry["slug"],
            title=entry["title"],
            minutes=int(entry["minutes"]),
            hint=entry["hint"].strip(),
            serve=entry.get("serve"),
            try_paths=tuple(entry.get("try", ())),
            programs=tuple(entry.get("programs", ())),
        )
        for entry in sorted(data["lesson"], key=lambda entry: entry["number"])
    ]


def find_lesson(ref: str | int, root: Path | None = None) -> Lesson:
    """Look a lesson up by number (``3``, ``"03"``) or stem (``"03_sse_protocol"``)."""
    lessons = load_lessons(root)
    text = str(ref).strip()
    number = text.split("_", 1)[0]
    if number.isdigit():
        number = f"{int(number):02d}"
        for lesson in lessons:
            if lesson.number == number:
                return lesson
    known = ", ".join(lesson.number for lesson in lessons)
    raise UnknownLessonError(f"there is no lesson {text!r}; the lessons are {known}")
