"""Lesson 08: streaming a table in keyset batches against loading every row first.

For 100,000 and 1,000,000 readings of one sensor, each export runs in a server process of
its own (so one variant's memory peak cannot hide in another's), on a loopback port:

- `streamed CSV` and `streamed NDJSON`: the reference solution's routes
  (`solutions/08_database_streaming.py`): keyset batches of 500 rows, a session per batch;
  the CSV goes out one chunk per batch, the NDJSON one line per row (FastAPI's JSON Lines).
- `all rows first (CSV)`: the same query without batches: `.all()`, then the whole CSV
  body, then the response.

The client (this process) first asks for a sensor that has no readings (so the pool's
first connection is open and the route has run once), then reads every byte of the export
and notes when the first one came (time to first byte, from sending the request). The server reports its peak resident memory
(`ru_maxrss`) before the request and after it.

Run: .venv/bin/python benchmarks/database_streaming.py [--sizes 100000 1000000] [--skip-ndjson]
Targets (issue 13): the streamed peak does not grow with the row count; time to first
byte under 50 ms for both sizes.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SENSOR = "boiler"
VARIANTS = {
    "streamed CSV": f"/sensors/{SENSOR}/readings.csv",
    "streamed NDJSON": f"/sensors/{SENSOR}/readings.ndjson",
    "all rows first (CSV)": f"/all-first/{SENSOR}/readings.csv",
}
DOWNLOAD_TIMEOUT = 600  # seconds: NDJSON of a million rows takes a while


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def serve(db: Path) -> None:
    """The child: serve the solution's app (and an all-rows-first route) until stdin closes."""
    import csv
    import io

    from fastapi.responses import Response
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from course_app.checking import load_exercise
    from course_app.demos.sample_db import async_engine
    from course_app.runtime import LessonServer

    solution = load_exercise("08_database_streaming", "solutions")
    sessions = async_sessionmaker(async_engine(db), expire_on_commit=False)
    app = solution.create_app(sessions)

    @app.get("/all-first/{sensor}/readings.csv")
    async def all_first(sensor: str) -> Response:
        query = (
            select(*solution.COLUMNS)
            .where(solution.Reading.sensor == sensor)
            .order_by(solution.Reading.taken_at, solution.Reading.id)
        )
        async with sessions() as session:
            rows = (await session.execute(query)).all()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(solution.ReadingOut.model_fields)
        writer.writerows(rows)
        return Response(buffer.getvalue(), media_type="text/csv")

    with LessonServer(app, name="bench-08", grace=2) as server:
        print(f"READY {server.url} {peak_rss_mb():.1f}", flush=True)
        sys.stdin.readline()  # the parent's download is done
        print(f"PEAK {peak_rss_mb():.1f}", flush=True)


def measure(db: Path, path: str) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COURSE_PACE": "1"},
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        ready = child.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"the server did not start: {ready}")
        url, before = ready[1], float(ready[2])
        first = None
        size = lines = 0
        timeout = httpx.Timeout(DOWNLOAD_TIMEOUT)
        with httpx.Client(timeout=timeout) as client:
            # Warm up: the pool's first connection, the route, the query's compiled form.
            client.get(url + path.replace(SENSOR, "no-such-sensor")).raise_for_status()
            started = time.perf_counter()
            with client.stream("GET", url + path) as response:
                response.raise_for_status()
                for chunk in response.iter_raw():  # as it arrives: no buffering
                    if first is None:
                        first = time.perf_counter() - started
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            total = time.perf_counter() - started
        child.stdin.write("done\n")
        child.stdin.flush()
        peak = float(child.stdout.readline().split()[1])
    finally:
        child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    return {
        "first": first or 0.0,
        "total": total,
        "mb": size / 1e6,
        "rows": lines - path.endswith(".csv"),  # a CSV has a header line
        "before": before,
        "peak": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--skip-ndjson", action="store_true", help="the slowest variant")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    from course_app.demos.sample_db import create_database

    variants = {k: v for k, v in VARIANTS.items() if not (args.skip_ndjson and "NDJSON" in k)}
    print(
        f"{'rows':>9}  {'variant':<21} {'first byte':>10} {'all':>8} {'body':>8}"
        f" {'server peak RSS':>16} {'(before)':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-08-") as folder:
        for size in args.sizes:
            db = create_database(Path(folder) / f"{size}.db", readings=size, sensors=(SENSOR,))
            for name, path in variants.items():
                m = measure(db, path)
                assert m["rows"] == size, f"{name}: {m['rows']} rows instead of {size}"
                print(
                    f"{size:>9,}  {name:<21} {m['first'] * 1000:>7.0f} ms {m['total']:>6.1f} s"
                    f" {m['mb']:>5.0f} MB {m['peak']:>13.0f} MB {m['before']:>6.0f} MB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
