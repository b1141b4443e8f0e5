"""Lesson 08: streaming a table in keyset batches against loading every row first.

For 100,000 and 1,000,000 readings of one sensor, each export runs in a server process of
its own (so one variant's memory peak cannot hide in another's), on a loopback port:

- `streamed CSV` and `streamed JSON Lines`: the reference solution's routes
  (`solutions/08_database_streaming.py`): keyset batches of `EXPORT_BATCH_SIZE` rows, newest
  first, a session per batch, whole batches written in chunks of about 64 KB.
- `JSON Lines, write per row`: the same rows through a generator path operation, as the
  notebook's first JSON Lines route does: FastAPI validates, serialises and writes each
  item on its own (only at `--slow-sizes`, by default 100,000 rows).
- `all rows first (CSV)`: the same query (the solution's `COLUMNS`, from the table), in the
  same order, without batches: `.all()`, then the whole CSV body, then the response.

The client (this process) first asks for a sensor that has no readings (so the pool's
first connection is open and the route has run once), then reads every byte of the export
and notes when the first one came (time to first byte, from sending the request). The
server reports the CPU seconds it spent on that export (user + system, all its threads:
a figure that a busy machine disturbs much less than the wall-clock time) and its peak
resident memory (`ru_maxrss`) before the request and after it. Each variant runs
`--repeat` times, each in a fresh server, in rounds (one run of each variant per round): the
table shows the medians and the largest peak, then the targets' ratios, each the median of
the ratios within a round.

Run: .venv/bin/python benchmarks/database_streaming.py [--sizes 100000 1000000] [--repeat 3]
     [--slow-sizes 100000] [--solution FILE]   (FILE: another version of the solution)
Targets: the streamed peak does not grow with the row count; time to first byte under
50 ms (issue 13); a streamed export's total at most 1.2x loading all rows first, and the
streamed JSON Lines at most 1.5x the streamed CSV (issue 22).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

SENSOR = "boiler"
SOLUTION = Path(__file__).resolve().parents[1] / "solutions" / "08_database_streaming.py"
VARIANTS = {
    "streamed CSV": f"/sensors/{SENSOR}/readings.csv",
    "streamed JSON Lines": f"/sensors/{SENSOR}/readings.ndjson",
    "JSON Lines, write per row": f"/per-row/{SENSOR}/readings.ndjson",
    "all rows first (CSV)": f"/all-first/{SENSOR}/readings.csv",
}
SLOW = "JSON Lines, write per row"
# (variant, baseline, target): total time against the baseline's, in the same round.
RATIOS = [
    ("streamed CSV", "all rows first (CSV)", 1.2),
    ("streamed JSON Lines", "streamed CSV", 1.5),
]
DOWNLOAD_TIMEOUT = 600  # seconds: a write per row for a million rows takes a while


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_solution(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("lesson08_solution", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def serve(db: Path, solution_path: Path) -> None:
    """The child: serve the solution's app, plus the two comparison routes, until told to stop.

    It answers the parent's lines on stdin: `cpu` (CPU seconds so far), `done` (peak RSS,
    then exit).
    """
    import csv
    import io
    from collections.abc import AsyncIterator

    from fastapi.responses import Response
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from course_app.demos.sample_db import async_engine
    from course_app.runtime import LessonServer

    solution = load_solution(solution_path)
    sessions = async_sessionmaker(async_engine(db), expire_on_commit=False)
    app = solution.create_app(sessions)
    # The solution's own columns, in the WHERE and ORDER BY too: the same query, whether
    # they are the table's columns (plain Core) or the model's attributes (the ORM).
    id_, sensor_, taken_at, _ = solution.COLUMNS

    async def per_row(sensor: str) -> AsyncIterator[Any]:
        async for batch in solution.reading_batches(sessions, sensor):
            for row in batch:
                yield solution.to_out(row)

    # The item type, as an object (this module's annotations are strings): FastAPI then
    # validates and serialises each item through it, as for the notebook's route.
    per_row.__annotations__["return"] = AsyncIterator[solution.ReadingOut]
    app.get("/per-row/{sensor}/readings.ndjson")(per_row)

    @app.get("/all-first/{sensor}/readings.csv")
    async def all_first(sensor: str) -> Response:
        query = (
            select(*solution.COLUMNS).where(sensor_ == sensor).order_by(taken_at.desc(), id_.desc())
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
        for command in sys.stdin:
            if command.strip() == "cpu":
                print(f"CPU {cpu_seconds():.4f}", flush=True)
            else:
                break
        print(f"PEAK {peak_rss_mb():.1f}", flush=True)


def measure(db: Path, path: str, solution: Path) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(db), "--solution", str(solution)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COURSE_PACE": "1"},
    )
    assert child.stdin is not None and child.stdout is not None

    def ask(command: str) -> float:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(command + "\n")
        child.stdin.flush()
        return float(child.stdout.readline().split()[1])

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
            cpu_before = ask("cpu")
            started = time.perf_counter()
            with client.stream("GET", url + path) as response:
                response.raise_for_status()
                for chunk in response.iter_raw():  # as it arrives: no buffering
                    if first is None:
                        first = time.perf_counter() - started
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            total = time.perf_counter() - started
        cpu = ask("cpu") - cpu_before
        peak = ask("done")
    finally:
        child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    return {
        "first": first or 0.0,
        "total": total,
        "cpu": cpu,
        "mb": size / 1e6,
        "rows": lines - path.endswith(".csv"),  # a CSV has a header line
        "before": before,
        "peak": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median)")
    parser.add_argument(
        "--slow-sizes",
        type=int,
        nargs="*",
        default=[100_000],
        help=f"the sizes {SLOW!r} runs at (none: leave it out; a million rows take minutes)",
    )
    parser.add_argument("--solution", type=Path, default=SOLUTION, help="the app to measure")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.solution)
        return

    from course_app.demos.sample_db import create_database

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {args.solution.name}")
    print(
        f"{'rows':>9}  {'variant':<26} {'first byte':>10} {'total':>8} {'CPU':>7} {'body':>7}"
        f" {'server peak RSS':>16} {'(before)':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-08-") as folder:
        for size in args.sizes:
            db = create_database(Path(folder) / f"{size}.db", readings=size, sensors=(SENSOR,))
            variants = {
                name: path
                for name, path in VARIANTS.items()
                if name != SLOW or size in args.slow_sizes
            }
            # Round after round, one run of each variant: this machine's speed drifts by
            # tens of percent over a minute, and a drift then slows every variant alike.
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            for _ in range(args.repeat):
                for name, path in variants.items():
                    m = measure(db, path, args.solution)
                    assert m["rows"] == size, f"{name}: {m['rows']} rows instead of {size}"
                    runs[name].append(m)
            for name, variant_runs in runs.items():

                def median(key: str, runs: list[dict[str, float]] = variant_runs) -> float:
                    return statistics.median(m[key] for m in runs)

                print(
                    f"{size:>9,}  {name:<26} {median('first') * 1000:>7.0f} ms"
                    f" {median('total'):>6.2f} s {median('cpu'):>5.2f} s {median('mb'):>4.0f} MB"
                    f" {max(m['peak'] for m in variant_runs):>13.0f} MB"
                    f" {median('before'):>6.0f} MB"
                )
            for name, baseline, target in RATIOS:
                ratios = [
                    m["total"] / b["total"] for m, b in zip(runs[name], runs[baseline], strict=True)
                ]
                print(
                    f"{size:>9,}  {name} / {baseline}: {statistics.median(ratios):.2f}x"
                    f" (target <= {target}x; each round: {', '.join(f'{r:.2f}' for r in ratios)})",
                    flush=True,
                )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
