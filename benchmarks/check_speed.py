"""How long the learner's loop takes: `course check NN` (stub and solution) and `course progress`.

Run: .venv/bin/python benchmarks/check_speed.py [--runs 3] [--lessons 00,03,11] [--outputs DIR]
Targets (issue 22): `course check NN` < 2 s for every lesson but 11, < 8 s for 11;
`course progress` < 20 s for all 14 lessons. Each figure is the median of --runs runs, wall
time and CPU time (the command and every process it started). Run it on a quiet machine:
the load average it prints first says how quiet it was.

The checks run in children of a warm worker (course_app/checking/warm_worker.py), which the
first check of a session starts: that first check is timed apart ("cold"), after stopping any
worker left running. CPU includes the worker's children (from /proc).

--outputs DIR writes each command's output (stdout, then the exit status) to DIR, so that two
versions of the checker can be compared with `diff -r`: a faster check must say the same.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COURSE = [sys.executable, "-m", "course_app.cli"]


def worker_cpu() -> dict[int, float]:
    """CPU seconds of each warm check worker (course_app.checking.warm_worker), its finished
    children included: a check's run happens in a child of the worker, not of the command."""
    ticks = os.sysconf("SC_CLK_TCK")
    home = Path(tempfile.gettempdir()) / f"course-check-{os.getuid()}"
    found = {}
    for pid_file in home.glob("*.pid"):
        try:
            pid = int(pid_file.read_text())
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        # utime, stime, cutime, cstime: fields 14-17 of /proc/PID/stat (11-14 after the name)
        found[pid] = sum(int(x) for x in fields[11:15]) / ticks
    return found


def stop_workers() -> None:
    """A cold start: no warm worker left from an earlier run."""
    home = Path(tempfile.gettempdir()) / f"course-check-{os.getuid()}"
    for pid_file in home.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    time.sleep(0.5)


def timed(args: list[str]) -> tuple[float, float, str, int]:
    """Wall seconds, CPU seconds (the command, its children and the worker's children), its
    stdout and exit status. A worker that exits during the run loses its share (rare)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = worker_cpu()
    started = time.perf_counter()
    # The learner's environment: no suite variables pointing the checker at generated stubs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu += sum(total - workers.get(pid, 0.0) for pid, total in worker_cpu().items())
    return wall, cpu, done.stdout, done.returncode


def measure(name: str, args: list[str], runs: int, outputs: Path | None) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, stdout, status = timed(args)
        walls.append(wall)
        cpus.append(cpu)
    if outputs is not None:
        (outputs / f"{name}.txt").write_text(f"{stdout}\n[exit {status}]\n", encoding="utf-8")
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lessons", default="", help="comma-separated numbers (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="skip `course progress`")
    parser.add_argument("--outputs", type=Path, default=None, help="write each output here")
    parser.add_argument("--warm", action="store_true", help="keep a running warm worker")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from course_app.checking import load_lessons

    lessons = [lesson.number for lesson in load_lessons()]
    if args.lessons:
        lessons = [number for number in lessons if number in args.lessons.split(",")]
    if args.outputs is not None:
        args.outputs.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} cores, median of {args.runs}")  # fmt: skip
    print(f"{'command':<32} {'wall s':>7} {'CPU s':>7}  target")
    missed = 0
    if not args.warm:
        # The first check of a session starts the warm worker: shown apart, not in the medians.
        stop_workers()
        first = lessons[0] if lessons else "00"
        wall, cpu, _, _ = timed([*COURSE, "check", first, "--solutions"])
        print(f"{f'course check {first} --solutions (cold)':<32} {wall:7.1f} {cpu:7.1f}  first run")
    for number in lessons:
        target = 8.0 if number == "11" else 2.0
        for flag in ("", "--solutions"):
            name = f"check {number} {flag}".strip()
            wall, cpu = measure(
                name.replace(" ", "_"), [*COURSE, "check", number, *filter(None, [flag])],
                args.runs, args.outputs,
            )  # fmt: skip
            ok = wall < target
            missed += not ok
            print(
                f"course {name:<25} {wall:7.1f} {cpu:7.1f}  < {target:.0f} s {'' if ok else 'MISSED'}"
            )
    if not args.no_progress:
        wall, cpu = measure("progress", [*COURSE, "progress"], args.runs, args.outputs)
        ok = wall < 20.0
        missed += not ok
        print(f"{'course progress':<32} {wall:7.1f} {cpu:7.1f}  < 20 s {'' if ok else 'MISSED'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
