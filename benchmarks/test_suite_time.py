"""Wall and CPU time of README's test command (`make test`) on this machine.

Run: .venv/bin/python benchmarks/test_suite_time.py [--runs 3] [--write-scope-seconds]
Targets (issue 22): pytest < 180 s wall and < 360 s of CPU on 2 cores, every check made.

CPU is what `make test` and everything it waited for used (pytest, its workers, notebook
kernels, servers, Chromium, `course check` runs), plus what the warm check worker
(course_app.checking.warm_worker) used meanwhile: it runs the exercise checks in forked
children but is a process of its own, never waited for, so `time make test` misses it.
The machine's load average is printed with each run: on a shared machine, wall time
measures the load as much as the suite.

Each run appends every test's wall and CPU seconds to a report (tests/plugins/cpu_report.py);
the tables at the end are the costliest scopes (pytest-xdist's unit of work) of the last run
and each worker's busy time (a lopsided schedule shows there).
``--write-scope-seconds`` saves the scopes' wall and CPU seconds for the scheduler
(tests/plugins/schedule.py: longest scopes first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.plugins.schedule import SCOPE_SECONDS, scope_of  # noqa: E402

WARM_WORKER = "course_app.checking.warm_worker"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def warm_worker_cpu() -> dict[int, float]:
    """CPU seconds (its own and its reaped children's) of every warm check worker, by pid."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if WARM_WORKER not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of /proc/PID/stat (after "pid (comm)")
        found[int(proc.name)] = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
    return found


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(report: Path) -> dict[str, object]:
    load = os.getloadavg()[0]
    workers_before, cpu_before = warm_worker_cpu(), children_cpu()
    env = {**os.environ, "CI": "true"}
    command = ["make", "test", f"PYTEST_ARGS=--cpu-report={report} -rfE"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    report.with_suffix(".log").write_text(result.stdout + result.stderr)
    workers_after = warm_worker_cpu()
    worker_cpu = sum(cpu - workers_before.get(pid, 0.0) for pid, cpu in workers_after.items())
    summary = [line for line in result.stdout.splitlines() if re.search(r" (passed|failed)", line)]
    pytest_seconds = re.search(r" in ([\d.]+)s", summary[-1]) if summary else None
    return {
        "exit": result.returncode,
        "summary": summary[-1].strip("= ") if summary else result.stdout[-2000:],
        "failures": [
            line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))
        ],
        "make wall": wall,
        "pytest wall": float(pytest_seconds.group(1)) if pytest_seconds else float("nan"),
        "cpu": children_cpu() - cpu_before + worker_cpu,
        "warm worker cpu": worker_cpu,
        "load before": load,
        "load after": os.getloadavg()[0],
    }


def scope_table(report: Path) -> dict[str, tuple[float, float, int]]:
    scopes: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for line in report.read_text().splitlines():
        row = json.loads(line)
        totals = scopes[scope_of(row["nodeid"])]
        totals[0] += row["wall"]
        totals[1] += row["cpu"]
        totals[2] += 1
    return {scope: (w, c, int(n)) for scope, (w, c, n) in scopes.items()}


def worker_table(report: Path) -> dict[str, tuple[float, float, int]]:
    """Busy wall seconds, CPU seconds and tests per pytest-xdist worker: the suite's wall
    time is bounded by the busiest one."""
    workers: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for line in report.read_text().splitlines():
        row = json.loads(line)
        totals = workers[row["worker"]]
        totals[0] += row["wall"]
        totals[1] += row["cpu"]
        totals[2] += 1
    return {worker: (w, c, int(n)) for worker, (w, c, n) in sorted(workers.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs (the median is reported)")
    parser.add_argument(
        "--write-scope-seconds", action="store_true", help=f"update {SCOPE_SECONDS.name}"
    )
    args = parser.parse_args()
    runs, report = [], Path()
    for number in range(1, args.runs + 1):
        report = Path(tempfile.mkstemp(prefix="suite-cpu-", suffix=".jsonl")[1])
        run = one_run(report)
        runs.append(run)
        print(
            f"run {number}: exit {run['exit']}, {run['summary']}; make test {run['make wall']:.0f} s,"
            f" pytest {run['pytest wall']:.0f} s wall, {run['cpu']:.0f} s CPU (warm check worker"
            f" {run['warm worker cpu']:.0f} s); load average {run['load before']:.1f} before,"
            f" {run['load after']:.1f} after",
            flush=True,
        )
        print("".join(f"  {line[:150]}\n" for line in run["failures"]), end="")  # type: ignore[union-attr]
        print(f"  pytest's output: {report.with_suffix('.log')}")
    for key in ("make wall", "pytest wall", "cpu"):
        print(f"median {key}: {statistics.median(float(r[key]) for r in runs):.0f} s")  # type: ignore[arg-type]
    table = scope_table(report)
    print(f"\ncostliest scopes of the last run ({report}):")
    print(f"{'scope':<78}{'items':>6}{'wall s':>9}{'CPU s':>8}")
    for scope, (wall, cpu, items) in sorted(table.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"{scope[:77]:<78}{items:>6}{wall:>9.1f}{cpu:>8.1f}")
    total_wall = sum(w for w, _, _ in table.values())
    total_cpu = sum(c for _, c, _ in table.values())
    print(
        f"{'all tests':<78}{sum(n for *_, n in table.values()):>6}{total_wall:>9.1f}{total_cpu:>8.1f}"
    )
    print(f"\n{'worker':<10}{'tests':>6}{'busy s':>9}{'CPU s':>8}")
    for worker, (wall, cpu, items) in worker_table(report).items():
        print(f"{worker:<10}{items:>6}{wall:>9.1f}{cpu:>8.1f}")
    if args.write_scope_seconds:
        seconds = {
            scope: {"wall": round(wall, 1), "cpu": round(cpu, 1)}
            for scope, (wall, cpu, _) in sorted(table.items())
        }
        SCOPE_SECONDS.write_text(json.dumps(seconds, indent=1) + "\n")
        print(f"wrote {SCOPE_SECONDS.relative_to(ROOT)}")
    return max(int(r["exit"]) for r in runs)  # type: ignore[call-overload]


if __name__ == "__main__":
    sys.exit(main())
