"""Lesson server start-to-ready and stop times, median of 20, with and without an SSE client.

Run: .venv/bin/python benchmarks/lesson_server.py
Targets (issue 2): start < 0.3 s; stop < 1 s with no client, within the grace with one.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx

from course_app.demos.endless_demo import create_app
from course_app.runtime import LessonServer

ROUNDS = 20
GRACE = 1.0


def _client_reading(url: str, connected: threading.Event) -> None:
    try:
        with httpx.Client(timeout=30) as client, client.stream("GET", url) as response:
            for _ in response.iter_lines():
                connected.set()
    except httpx.HTTPError:
        pass  # the server went away: expected


def measure(path: str | None) -> tuple[list[float], list[float]]:
    app = create_app(interval=0.1)
    starts, stops = [], []
    for _ in range(ROUNDS):
        server = LessonServer(app, name="bench", grace=GRACE)
        t0 = time.perf_counter()
        server.start()
        starts.append(time.perf_counter() - t0)
        reader = None
        if path:
            connected = threading.Event()
            reader = threading.Thread(target=_client_reading, args=(server.url + path, connected))
            reader.start()
            connected.wait(5)
        t0 = time.perf_counter()
        server.stop()
        stops.append(time.perf_counter() - t0)
        if reader:
            reader.join(10)
    return starts, stops


def main() -> None:
    print(f"lesson server, median of {ROUNDS} (grace {GRACE:.1f} s)")
    for label, path in [
        ("no client", None),
        ("open fastapi.sse client", "/native"),
        ("open sse-starlette client", "/sse-starlette"),
    ]:
        starts, stops = measure(path)
        print(
            f"  {label:<28} start {statistics.median(starts) * 1000:6.1f} ms"
            f"   stop {statistics.median(stops) * 1000:7.1f} ms"
            f"   (stop max {max(stops) * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
