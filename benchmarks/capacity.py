"""What one uvicorn worker holds: streams, events per second, CPU and memory per stream.

Run: .venv/bin/python benchmarks/capacity.py
Lesson 12's notebook runs the same measurement small (200 streams, half a second); this is
the big version. Each row is a fresh uvicorn process (course_app.demos.capacity), measured with
psutil while loopback clients hold the streams open. Numbers depend on the machine and on
uvicorn's extras (uvloop, httptools): measure on the machine you deploy to.
"""

from __future__ import annotations

from course_app.demos.capacity import measure_all, render

SCENARIOS = [
    ("1000 streams, 1 event/s each (mostly idle)", {"streams": 1000, "rate": 1}),
    ("200 streams, 50 events/s each (busy)", {"streams": 200, "rate": 50}),
]


def main() -> None:
    for title, options in SCENARIOS:
        print(title)
        print(render(measure_all(seconds=3.0, **options)))
        print()


if __name__ == "__main__":
    main()
