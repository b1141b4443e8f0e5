"""Lesson 12's helpers besides nginx: the capacity measurement and the notebook's Chromium."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from course_app.demos.capacity import KINDS, measure, render
from course_app.runtime import browser


def test_capacity_measures_a_fresh_server_process() -> None:
    row = measure("sse-starlette", streams=5, rate=20, seconds=0.3)
    assert (row.kind, row.streams, row.rate) == ("sse-starlette", 5, 20)
    assert row.events_per_s > 0
    assert row.cpu_percent >= 0
    table = render([row])
    assert table.splitlines()[1].startswith("sse-starlette")
    assert list(KINDS) == ["StreamingResponse", "sse-starlette", "fastapi.sse"]


def test_open_chromium_without_chromium_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_CHROMIUM", "/nonexistent/chromium")
    assert browser.chromium_path() is None
    assert asyncio.run(browser.open_chromium()) is None


def test_chromium_is_found_where_macos_puts_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On macOS the browser is an app bundle, not on the PATH: the lookup finds it there."""
    app = tmp_path / "Chromium.app/Contents/MacOS/Chromium"
    app.parent.mkdir(parents=True)
    app.write_text("")
    monkeypatch.delenv("COURSE_CHROMIUM", raising=False)
    monkeypatch.setattr(browser, "MACOS_CANDIDATES", (str(app),))
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    assert browser.chromium_path(platform="darwin") == str(app)
    assert browser.chromium_path(platform="linux") in (None, *browser.LINUX_CANDIDATES)
    assert "brew install --cask google-chrome" in browser.MACOS_HINT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_course_serve_12_gives_a_working_link_and_keeps_tokens_out_of_the_access_log() -> None:
    """`course serve 12` suggests a command that makes a valid link, and uvicorn's access log
    (on in `course serve`) shows `token=<redacted>`, never the token itself."""
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",  # its prints and uvicorn's log lines in the order written
    }
    command = [sys.executable, "-m", "course_app.cli", "serve", "12", "--solution"]
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                refused = httpx.get(base + "/events?token=ada.4102444800.forged", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "course serve exited"
                assert time.monotonic() < deadline, "course serve did not start"
                time.sleep(0.1)
        assert refused.status_code == 401
        # The suggestion as printed: `Try: curl -N "<base>/events?token=$(python -c ...)"`.
        assert proc.stdout is not None
        read: list[str] = []
        while len(suggested := [x for x in read if x.startswith("Try: ")]) < 2:
            line = proc.stdout.readline()
            assert line, f"course serve printed no two suggestions: {read}"
            read.append(line.strip())
        assert suggested[1] == f'Try: curl -N "{base}/events?token=ada.4102444800.forged"'
        quoted_url = suggested[0].removeprefix("Try: curl -N ")
        shell = subprocess.run(
            ["bash", "-c", f"printf %s {quoted_url}"],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        url = shell.stdout
        token = url.partition("token=")[2]
        assert token.startswith("ada."), shell.stderr
        with httpx.Client(timeout=10) as client, client.stream("GET", url) as response:
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("data:"))
        assert first.startswith('data: {"user": "ada", "n": 1')
    finally:
        proc.terminate()
        proc.wait(15)
        # Not communicate(): it reads the pipe itself and misses what readline() buffered.
        rest = proc.stdout.read() if proc.stdout is not None else ""
    out = "\n".join(read) + "\n" + rest
    access = [line for line in out.splitlines() if '"GET /events' in line]
    assert [line.split(" - ", 1)[1] for line in access] == [
        '"GET /events?token=<redacted> HTTP/1.1" 401 Unauthorized',
        '"GET /events?token=<redacted> HTTP/1.1" 200 OK',
    ]
    logged = [line for line in out.splitlines() if not line.startswith("Try: ")]
    assert [line for line in logged if token in line or "forged" in line] == []


def test_demo_refuses_non_ascii_digits_without_a_500() -> None:
    """`"²".isdigit()` is True and `int("²")` raises: the demo's id and expiry parsing must
    not answer 500. Over a real socket (TestClient re-encodes header values)."""
    from course_app.demos.production_demo import create_app
    from course_app.runtime import LessonServer

    requests = {
        "last-event-id": b"GET /numbers HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xc2\xb2\r\n\r\n",
        "expires": b"GET /signed-stream?user=ada&expires=%C2%B2&sig=00 HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    with LessonServer(create_app(), name="t12-digits") as server:
        statuses = {}
        for label, request in requests.items():
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(request)
                statuses[label] = sock.recv(12)
    assert statuses == {"last-event-id": b"HTTP/1.1 200", "expires": b"HTTP/1.1 401"}
