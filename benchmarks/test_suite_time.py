"""Wall time of README's test command (`make test`) on this machine.

Run: .venv/bin/python benchmarks/test_suite_time.py   (target: < 5 minutes on 2 cores, all 14 lessons)
"""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    started = time.perf_counter()
    result = subprocess.run(["make", "test"], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    summary = [
        line for line in result.stdout.splitlines() if " passed" in line or " failed" in line
    ]
    print(summary[-1] if summary else result.stdout[-2000:])
    print(f"make test: exit {result.returncode}, wall time {elapsed:.1f} s")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
