"""The `course` command against a small throwaway course (COURSE_ROOT points at it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from course_app.checking import make_stub
from course_app.cli import main

REPO = Path(__file__).resolve().parent.parent

SOLUTION = '''"""Demo lesson."""

from fastapi import FastAPI


def shout(word: str) -> str:
    """WORD!"""
    # TODO: return the word in capitals with an exclamation mark.
    ### BEGIN SOLUTION
    if not word:
        raise ValueError("an empty word cannot be shouted")
    return word.upper() + "!"
    ### END SOLUTION


app = FastAPI()


@app.get("/shout/{word}")
async def shout_route(word: str) -> dict[str, str]:
    return {"shout": shout(word)}
'''

TESTS = '''import pytest


def test_shout(exercise):
    """shout("hi") is "HI!".

    Which str method gives capitals? What comes after the word?
    """
    assert exercise.shout("hi") == "HI!"


def test_shout_rejects_empty(exercise):
    """shout("") raises ValueError

    What should an empty word do before anything is built?
    """
    with pytest.raises(ValueError, match="empty word"):
        exercise.shout("")


def test_always_passes(exercise):
    """the module imports"""
'''

MANIFEST = """[[lesson]]
number = "07"
slug = "demo"
title = "Demo lesson"
minutes = 5
hint = "What does str.upper() return?"
try = ["/shout/hey", "PAGE /docs", "POST URL/shout/hey"]
"""


@pytest.fixture
def course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for folder in ("exercises", "solutions", "tests/exercises", "notebooks"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "lessons.toml").write_text(MANIFEST)
    (tmp_path / "solutions/07_demo.py").write_text(SOLUTION)
    (tmp_path / "exercises/07_demo.py").write_text(make_stub(SOLUTION))
    (tmp_path / "tests/exercises/test_07_demo.py").write_text(TESTS)
    shutil.copy(REPO / "tests/exercises/conftest.py", tmp_path / "tests/exercises/conftest.py")
    monkeypatch.setenv("COURSE_ROOT", str(tmp_path))
    # The suite points the checker at generated stubs; these tests use their own course.
    monkeypatch.delenv("COURSE_EXERCISES_DIR", raising=False)
    return tmp_path


def test_list(course: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert "07  Demo lesson" in capsys.readouterr().out


def test_check_fails_on_the_stub_with_a_hint(
    course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "7"]) == 1
    out = capsys.readouterr().out
    assert 'FAIL  shout("hi") is "HI!".' in out
    assert "NotImplementedError: TODO: write shout()" in out
    assert "PASS  the module imports" in out
    assert "Stuck? `course hint 07`" in out


def test_a_check_skipped_for_a_missing_tool_does_not_hold_the_learner_back(
    course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (course / "exercises/07_demo.py").write_text(SOLUTION)
    with (course / "tests/exercises/test_07_demo.py").open("a") as tests:
        tests.write(
            "\n\ndef test_through_nginx(exercise):\n"
            '    """shout works behind nginx"""\n'
            '    pytest.skip("needs nginx: sudo apt-get install nginx")\n'
        )
    assert main(["check", "07"]) == 0
    out = capsys.readouterr().out
    assert "SKIP  shout works behind nginx" in out
    assert "needs nginx: sudo apt-get install nginx" in out
    assert "3 of 4 checks pass and 1 could not run here (see SKIP)" in out


def test_check_shows_expected_and_actual(course: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A learner needs the regex and the real message, and where their code raised."""
    (course / "exercises/07_demo.py").write_text(
        SOLUTION.replace("an empty word cannot be shouted", "nothing to shout").replace(
            '+ "!"', '+ "?"'
        )
    )
    assert main(["check", "07"]) == 1
    out = capsys.readouterr().out
    assert "assert 'HI?' == 'HI!'" in out
    assert "Expected regex: 'empty word'" in out
    assert "Actual message: 'nothing to shout'" in out


def test_an_endless_loop_stops_the_check_after_one_timeout(
    course: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURSE_TEST_TIMEOUT", "2")
    (course / "exercises/07_demo.py").write_text(
        SOLUTION.replace("    if not word:", "    while True:\n        pass\n    if not word:")
    )
    started = time.monotonic()
    assert main(["check", "07"]) == 1
    out = capsys.readouterr().out
    assert "Timeout" in out
    assert "checks did not run: a check timed out" in out
    assert time.monotonic() - started < 60  # one timeout, not one per test


def _check_output(course: Path, capsys: pytest.CaptureFixture[str], *, mark: str) -> str:
    """`course check 07`'s output with the test named ``mark`` marked own_session."""
    tests = TESTS.replace(f"def {mark}(", f"@pytest.mark.own_session  # a comment\ndef {mark}(")
    assert tests != TESTS
    (course / "tests/exercises/test_07_demo.py").write_text(tests)
    main(["check", "07"])
    marked = capsys.readouterr().out
    (course / "tests/exercises/test_07_demo.py").write_text(TESTS)
    main(["check", "07"])
    return marked + "\n=====\n" + capsys.readouterr().out


@pytest.mark.parametrize("mark", ["test_shout", "test_always_passes"])
@pytest.mark.parametrize("exercise", ["stub", "solved", "endless loop"])
def test_a_check_in_a_session_of_its_own_reports_as_one_session_would(
    course: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mark: str,
    exercise: str,
) -> None:
    """A test marked own_session runs beside the others, and the report is the same: its
    place in the file, and "not run" after a timeout as in one session."""
    monkeypatch.setenv("COURSE_TEST_TIMEOUT", "2")
    if exercise == "solved":
        (course / "exercises/07_demo.py").write_text(SOLUTION)
    elif exercise == "endless loop":
        (course / "exercises/07_demo.py").write_text(
            SOLUTION.replace("    if not word:", "    while True:\n        pass\n    if not word:")
        )
    marked, _, alone = _check_output(course, capsys, mark=mark).partition("\n=====\n")
    assert marked == alone
    if exercise == "endless loop":  # the last test came back "not run" from its own session
        assert "checks did not run: a check timed out" in marked


def test_check_passes_once_solved(course: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (course / "exercises/07_demo.py").write_text(SOLUTION)
    assert main(["check", "07"]) == 0
    assert "All 3 checks pass" in capsys.readouterr().out


def test_check_solutions_flag(course: Path) -> None:
    assert main(["check", "07", "--solutions"]) == 0


def test_check_reports_an_import_error_in_one_line(
    course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (course / "exercises/07_demo.py").write_text("def shout(:\n")
    assert main(["check", "07"]) == 1
    out = capsys.readouterr().out
    assert "exercises/07_demo.py has a syntax error on line 1" in out
    assert "Traceback" not in out


def test_unknown_lesson_is_one_line_and_exit_2(
    course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "99"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "course: there is no lesson '99'; the lessons are 07"


def test_hint_gives_the_failing_checks_hints(
    course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hint", "07"]) == 0
    out = capsys.readouterr().out
    assert "Which str method gives capitals?" in out  # the failing test's own hint
    assert "What should an empty word do" in out
    assert "What does str.upper() return?" in out  # the lesson's questions come last


def test_hint_after_solving_has_nothing_left(
    course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (course / "exercises/07_demo.py").write_text(SOLUTION)
    assert main(["hint", "07"]) == 0
    out = capsys.readouterr().out
    assert "Every check passes" in out
    assert "Which str method" not in out


def test_reset_keeps_a_backup_of_the_learners_work(course: Path) -> None:
    exercise = course / "exercises/07_demo.py"
    exercise.write_text("my work in progress\n")
    assert main(["reset", "07"]) == 0
    assert exercise.read_text() == make_stub(SOLUTION)
    backups = list((course / "exercises/.backups").iterdir())
    assert [b.read_text() for b in backups] == ["my work in progress\n"]
    # A second reset has nothing to save and must not add an empty backup.
    assert main(["reset", "07"]) == 0
    assert len(list((course / "exercises/.backups").iterdir())) == 1


def test_reset_restores_a_deleted_exercise(course: Path) -> None:
    (course / "exercises/07_demo.py").unlink()
    assert main(["reset", "07"]) == 0
    assert (course / "exercises/07_demo.py").read_text() == make_stub(SOLUTION)


def test_progress(course: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["progress"]) == 0
    assert "Progress: [--------------------] 0/1 exercises solved" in capsys.readouterr().out


def test_serve_refuses_a_busy_port(course: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", "07", "--port", str(port)]) == 2
    assert f"port {port} is in use" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_runs_the_lessons_app(course: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "course_app.cli", "serve", "07", "--solution", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/shout/hey", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "course serve exited"
                assert time.monotonic() < deadline, "course serve did not start"
                time.sleep(0.1)
        assert response.json() == {"shout": "HEY!"}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    # It suggests the lesson's real URLs, not a bare "/" that is a 404 for most lessons.
    assert f'Try: curl -N "http://127.0.0.1:{port}/shout/hey"' in out
    assert f"Open in a browser: http://127.0.0.1:{port}/docs" in out
    assert f"Try: curl -N -X POST http://127.0.0.1:{port}/shout/hey" in out


def test_lab_starts_jupyterlab_with_the_course_settings(tmp_path: Path) -> None:
    """`course lab` serves the course in JupyterLab, with the news prompt and update check off"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "course_app.cli", "lab", "--no-browser", f"--port={port}"]
    command += ["--ServerApp.token=course-test", "--allow-root"]  # CI runs as root
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    lab = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:notification"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert lab.poll() is None, lab.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
            try:
                response = httpx.get(url, headers={"Authorization": "token course-test"})
                break
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
    # Stopping `course lab` stops JupyterLab itself, not just a parent that waited for it.
    with pytest.raises(httpx.TransportError):
        httpx.get(url, headers={"Authorization": "token course-test"})
    assert response.status_code == 200
    defaults = {
        key: value["default"] for key, value in response.json()["schema"]["properties"].items()
    }
    assert defaults["fetchNews"] == "false"
    assert defaults["checkForUpdates"] is False


def test_progress_shows_each_lesson(course: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["progress"]) == 0
    out = capsys.readouterr().out
    assert "07  Demo lesson 1/3 checks" in out
    assert "0/1 exercises solved" in out
    (course / "exercises/07_demo.py").write_text(SOLUTION)
    assert main(["progress"]) == 0
    out = capsys.readouterr().out
    assert "07  Demo lesson done" in out
    assert "1/1 exercises solved" in out
