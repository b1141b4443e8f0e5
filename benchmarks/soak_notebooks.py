"""Soak the notebooks: strict nbval N times per notebook, with two CPU burners running.

A learner's `make test` and CI run four workers on two cores: a loaded machine. A stored
output that depends on timing passes on a quiet machine and fails there now and then. This
runs each notebook's strict nbval (`pytest notebooks/NN_slug.ipynb`, the suite's own
settings: pace 0.02, the sanitize file) `--runs` times while two busy-looping processes
keep the CPUs loaded, a few notebooks at a time (`--jobs`; one notebook never runs twice at
once), and reports the failures per notebook with the first failing cell of each failing run.

Run: .venv/bin/python benchmarks/soak_notebooks.py [--runs 10] [--jobs 2] [--notebooks 05 13]
     (or `make soak`, `make soak SOAK_ARGS="--runs 3 --notebooks 05"`). The 14 notebooks
     x 10 runs take one to two hours on 2 cores (40 to 120 s a run). The burners and every
     child (pytest, its kernels, their servers: each run is a process group of its own) are
     stopped on exit, Ctrl-C and SIGTERM. Failing runs' pytest output is kept under --logs.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BURN = "while True: pass"
# nbval's item ids: "notebooks/05_x.ipynb::Cell 8". -rfE prints one summary line per failure.
FAILED_CELL = re.compile(r"^(?:FAILED|ERROR) \S+?::(Cell \d+)", re.MULTILINE)


@dataclass
class Soak:
    notebook: Path
    runs: int = 0
    failures: int = 0
    first_cells: Counter[str] = field(default_factory=Counter)


class Children:
    """Every process this script started, so that any way out stops them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self.stopping = threading.Event()

    def start(self, command: list[str], **options: object) -> subprocess.Popen[bytes]:
        with self._lock:
            if self.stopping.is_set():
                raise KeyboardInterrupt
            # A session of its own: pytest's kernels and their servers go with it on killpg.
            process = subprocess.Popen(command, start_new_session=True, **options)  # type: ignore[call-overload]
            self._processes.add(process)
            return process

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.discard(process)

    def stop_all(self) -> None:
        self.stopping.set()
        with self._lock:
            processes = list(self._processes)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in processes:
                if process.poll() is None:
                    try:
                        os.killpg(process.pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 5
            while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
                time.sleep(0.05)
        # Whatever a kernel left in the group after pytest itself ended.
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def find_notebooks(numbers: list[str] | None) -> list[Path]:
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not numbers:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.name.startswith(n.zfill(2)) for n in numbers)]
    missing = [n for n in numbers if not any(nb.name.startswith(n.zfill(2)) for nb in notebooks)]
    if missing:
        raise SystemExit(f"no notebook numbered {', '.join(missing)} in notebooks/")
    return chosen


def first_failing_cell(output: str, returncode: int) -> str:
    cells = FAILED_CELL.findall(output)
    if cells:
        return cells[0]
    if returncode == -signal.SIGKILL:
        return "timed out"
    return f"no cell (exit {returncode})"  # collection error, crash: the log says more


def run_once(
    soak: Soak, children: Children, timeout: float, logs: Path, number: int
) -> tuple[bool, str, float]:
    """One strict nbval run of one notebook; (passed, first failing cell, seconds)."""
    command = [sys.executable, "-m", "pytest", str(soak.notebook.relative_to(ROOT)), "-q", "-rfE"]
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        process = children.start(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        finally:
            children.forget(process)
        output.seek(0)
        text = output.read().decode(errors="replace")
    elapsed = time.monotonic() - started
    if children.stopping.is_set():
        raise KeyboardInterrupt
    if process.returncode == 0:
        return True, "", elapsed
    log = logs / f"{soak.notebook.stem}.run{number}.txt"
    log.write_text(text)
    return False, first_failing_cell(text, process.returncode), elapsed


def soak_all(
    soaks: list[Soak], runs: int, jobs: int, timeout: float, children: Children, logs: Path
) -> None:
    # Round-robin order (every notebook's run 1, then every run 2, ...), and one notebook
    # never runs twice at the same time: two kernels of one notebook could share a name.
    pending = [(run, soak) for run in range(1, runs + 1) for soak in soaks]
    busy: set[Path] = set()
    lock = threading.Condition()
    total, done = len(pending), 0
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal done
        while True:
            with lock:
                while True:
                    if children.stopping.is_set() or errors:
                        return
                    job = next(((r, s) for r, s in pending if s.notebook not in busy), None)
                    if job is not None or not pending:
                        break
                    lock.wait()
                if job is None:
                    return
                pending.remove(job)
                busy.add(job[1].notebook)
            number, soak = job
            try:
                passed, cell, seconds = run_once(soak, children, timeout, logs, number)
            except BaseException as exc:  # KeyboardInterrupt from stop_all, or a bug
                with lock:
                    errors.append(exc)
                    lock.notify_all()
                return
            with lock:
                busy.discard(soak.notebook)
                soak.runs += 1
                done += 1
                if not passed:
                    soak.failures += 1
                    soak.first_cells[cell] += 1
                verdict = "passed" if passed else f"FAILED at {cell}"
                print(
                    f"[{done:>3}/{total}] {soak.notebook.stem} run {number}/{runs}:"
                    f" {verdict} ({seconds:.0f} s)",
                    flush=True,
                )
                lock.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.2)  # short joins: the main thread must stay free for Ctrl-C
    if errors and not isinstance(errors[0], KeyboardInterrupt):
        raise errors[0]


def table(soaks: list[Soak]) -> str:
    rows = [("notebook", "runs", "failures", "first failing cell")]
    for soak in soaks:
        cells = ", ".join(f"{cell} ({n}x)" for cell, n in soak.first_cells.most_common()) or "-"
        rows.append((soak.notebook.stem, str(soak.runs), str(soak.failures), cells))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{row[0]:<{widths[0]}} | {row[1]:>{widths[1]}} | {row[2]:>{widths[2]}} | {row[3]}"
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="strict nbval runs per notebook")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at the same time")
    parser.add_argument("--notebooks", nargs="+", metavar="NN", help="e.g. 05 13 (default: all)")
    parser.add_argument("--burners", type=int, default=2, help="busy-looping processes")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds before a run is killed (a failure)"
    )
    parser.add_argument("--logs", type=Path, help="where failing runs' output goes")
    args = parser.parse_args()
    if args.runs < 1 or args.jobs < 1 or args.burners < 0:
        parser.error("--runs and --jobs must be at least 1, --burners at least 0")
    soaks = [Soak(nb) for nb in find_notebooks(args.notebooks)]
    logs = args.logs or Path(tempfile.mkdtemp(prefix="soak-notebooks-"))
    logs.mkdir(parents=True, exist_ok=True)

    children = Children()
    # SIGTERM (a CI cancel, `kill`) takes the same way out as Ctrl-C; SIGINT explicitly too,
    # since a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    print(
        f"{len(soaks)} notebook(s) x {args.runs} strict nbval runs,"
        f" {min(args.jobs, len(soaks))} at a time,"
        f" {args.burners} CPU burners, {os.cpu_count()} CPUs; failing runs' output: {logs}",
        flush=True,
    )
    started = time.monotonic()
    interrupted = False
    try:
        for _ in range(args.burners):
            children.start([sys.executable, "-c", BURN], stdout=subprocess.DEVNULL)
        soak_all(soaks, args.runs, args.jobs, args.timeout, children, logs)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        children.stop_all()
    print()
    if interrupted:
        print("interrupted: the burners and every run were stopped; the runs so far:")
    print(table(soaks))
    failures = sum(soak.failures for soak in soaks)
    runs = sum(soak.runs for soak in soaks)
    print(f"{failures} failure(s) in {runs} runs, {time.monotonic() - started:.0f} s")
    return 130 if interrupted else int(failures > 0)


if __name__ == "__main__":
    sys.exit(main())
