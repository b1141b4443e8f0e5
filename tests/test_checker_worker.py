"""The checker's runs in children of the warm worker report what a fresh pytest would.

tests/test_cli.py checks the learner's view (verdicts, an endless loop, a syntax error) through
the worker, as `course check` runs; these tests pin what the worker itself promises.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from course_app.checking import make_stub
from course_app.checking.checker import run_check
from course_app.checking.pytest_report import run_reported
from course_app.checking.warm_worker import (
    _module_files,
    _unchanged,
    disabled,
    worker_pid,
    worker_status,
)

SOLUTION = '''"""Demo lesson."""


def _check(word: str) -> None:
    if not word:
        raise ValueError("an empty word cannot be shouted")


def shout(word: str) -> str:
    """WORD!"""
    # TODO: return the word in capitals with an exclamation mark.
    ### BEGIN SOLUTION
    _check(word)
    return word.upper() + "!"
    ### END SOLUTION
'''

TESTS = '''import pytest


def test_shout(exercise):
    """shout("hi") is "HI!"."""
    assert exercise.shout("hi") == "HI!"


def test_shout_rejects_empty(exercise):
    """shout("") raises ValueError"""
    with pytest.raises(ValueError, match="empty word"):
        exercise.shout("")
'''

MANIFEST = """[[lesson]]
number = "07"
slug = "demo"
title = "Demo lesson"
minutes = 5
hint = "What does str.upper() return?"
"""

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for folder in ("exercises", "solutions", "tests/exercises"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "lessons.toml").write_text(MANIFEST)
    (tmp_path / "solutions/07_demo.py").write_text(SOLUTION)
    (tmp_path / "exercises/07_demo.py").write_text(make_stub(SOLUTION))
    (tmp_path / "tests/exercises/test_07_demo.py").write_text(TESTS)
    conftest = REPO / "tests/exercises/conftest.py"
    (tmp_path / "tests/exercises/conftest.py").write_text(conftest.read_text())
    monkeypatch.setenv("COURSE_ROOT", str(tmp_path))
    monkeypatch.delenv("COURSE_EXERCISES_DIR", raising=False)
    return tmp_path


# Two bugs: a KeyError deep in a helper, and the ValueError re-raised as another error (the
# report names the line of the last one raised, as pytest's long traceback would).
CHAINED = SOLUTION.replace(
    "    if not word:\n",
    '    if word == "hi":\n        {}["x"]\n    if not word:\n',
).replace(
    "    _check(word)\n",
    "    try:\n        _check(word)\n    except ValueError as exc:\n"
    '        raise RuntimeError("shouting failed") from exc\n',
)


@pytest.mark.parametrize(
    "code",
    [make_stub(SOLUTION), SOLUTION, CHAINED, "def shout(:\n"],
    ids=["stub", "solved", "bug", "syntax"],
)
def test_the_worker_reports_what_a_fresh_pytest_reports(course: Path, code: str) -> None:
    (course / "exercises/07_demo.py").write_text(code)
    warm = run_check("07").render()
    with disabled():
        fresh = run_check("07").render()
    assert warm == fresh


def test_a_failure_names_the_exercise_line_it_was_raised_at(course: Path) -> None:
    """The deepest line of the learner's file, found without pytest's source listing."""
    (course / "exercises/07_demo.py").write_text(CHAINED)
    out = run_check("07").render()
    lines = CHAINED.splitlines()
    deep = lines.index('        {}["x"]') + 1
    reraised = lines.index('        raise RuntimeError("shouting failed") from exc') + 1
    assert f"KeyError: 'x'\n        (raised at exercises/07_demo.py:{deep})" in out, out
    assert f"(raised at exercises/07_demo.py:{reraised})" in out, out


def _write_test(folder: Path, body: str) -> None:
    (folder / "test_cell.py").write_text(textwrap.dedent(body))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended
        return stat.read().rpartition(")")[2].split()[0] != "Z"


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_run_that_is_stopped_ends_with_everything_it_started(tmp_path: Path, how: str) -> None:
    """Past the run's timeout, or when the caller cancels, the child's whole process group
    ends: the test's own subprocess too, not only pytest."""
    pid_file = tmp_path / "sleeper.pid"
    _write_test(
        tmp_path,
        f"""
        import subprocess, time

        def test_waits():
            sleeper = subprocess.Popen(["sleep", "300"])
            open({str(pid_file)!r}, "w").write(str(sleeper.pid))
            time.sleep(300)
        """,
    )
    if how == "cancel":
        cancel = threading.Event()
        threading.Thread(target=lambda: (_wait_for(pid_file), cancel.set()), daemon=True).start()
        rows, problem = run_reported(["test_cell.py"], cwd=tmp_path, timeout=60, cancel=cancel)
        assert rows == [] and problem.startswith("cancelled"), problem
    else:
        # The timeout proves something only if it struck after the test started its
        # subprocess: a short one first, a longer one when the machine was too slow for that.
        for timeout in (2, 4, 8, 16, 32):
            rows, problem = run_reported(["test_cell.py"], cwd=tmp_path, timeout=timeout)
            assert rows == [] and problem.startswith(f"the tests took longer than {timeout} s"), (
                problem
            )
            if pid_file.exists() and pid_file.read_text():
                break
    assert pid_file.exists(), "the test never started its subprocess"
    assert _wait_gone(int(pid_file.read_text())), "the test's subprocess outlived the run"


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_runs_do_not_leak_into_each_other(tmp_path: Path) -> None:
    """Each run is a fork: what one run changes (environment, an imported module, the
    working directory) the next one does not see."""
    _write_test(
        tmp_path,
        """
        import os, fastapi

        def test_clean():
            assert "LEAKED" not in os.environ
            assert not hasattr(fastapi, "leaked")
            assert os.getcwd() == os.environ["EXPECTED_CWD"]
            os.environ["LEAKED"] = "1"
            fastapi.leaked = True
            os.chdir("/")
        """,
    )
    for _ in range(2):
        rows, problem = run_reported(
            ["test_cell.py"], cwd=tmp_path, env={"EXPECTED_CWD": str(tmp_path)}
        )
        assert problem == "" and [row["outcome"] for row in rows] == ["passed"], rows
    assert worker_pid() is not None, "the runs did not go through the warm worker"


def test_a_worker_notices_an_edited_module(tmp_path: Path) -> None:
    """What makes a worker stale: a file of a module it imported changed."""
    module = tmp_path / "edited_module_for_worker_test.py"
    module.write_text("VALUE = 1\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        __import__(module.stem)
        files = _module_files()
        assert _unchanged(files)
        module.write_text("VALUE = 22\n")
        assert not _unchanged(files)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module.stem, None)


def test_a_learner_ctrl_c_ends_the_run(tmp_path: Path) -> None:
    """The caller goes away mid-run (Ctrl+C, a closed terminal): the child ends too."""
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    _write_test(
        tmp_path,
        f"""
        import os, time

        def test_waits():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(300)
        """,
    )
    caller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from course_app.checking.pytest_report import run_reported;"
            f" run_reported(['test_cell.py'], cwd=Path({str(tmp_path)!r}))",
        ]
    )
    _wait_for(pid_file)
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    assert _wait_gone(int(pid_file.read_text())), "the run outlived its caller"


def test_the_worker_imports_nothing_that_would_make_it_stale() -> None:
    """A worker that imported a plugin pytest loads itself, matplotlib, or a module that
    starts a thread would refuse every request (and be started again for each): once it has
    imported everything (CORE, then LATER while idle), it must still be fit to fork."""
    # A status request, unlike a run, does not make a stale worker exit: it can say why.
    deadline = time.monotonic() + 120
    status = worker_status(start=True)
    if status and status["changed"]:  # one started before course_app was edited: not ours
        os.kill(status["pid"], signal.SIGTERM)
        assert _wait_gone(status["pid"])
        status = worker_status(start=True)
    while status and status["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
        status = worker_status()
    assert status is not None, "no warm worker started (COURSE_CHECK_WORKER=0? no fork?)"
    assert status["pending"] == 0, f"the worker still had imports to make: {status}"
    assert status["never"] == [], f"the worker imported {status['never']}: pytest -p / matplotlib"
    assert status["threads"] == 1, f"the worker runs {status['threads']} threads: a fork copies one"
