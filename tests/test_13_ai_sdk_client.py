"""Lesson 13's chat service against a real client: the Vercel AI SDK (npm ``ai``) in Node.

``tests/node/`` pins the ``ai`` package (``package.json`` and its lock file); its test drives
the service with the SDK's own ``DefaultChatTransport`` and ``readUIMessageStream``: a whole
answer and the next turn with its history, 204 after the end, resume after a dropped
connection, Stop, an upstream 429. This wrapper installs the pinned packages once
(``npm ci``, into ``tests/node/node_modules``), starts the service (the reference solution's
app, as ``course serve 13 --solution`` runs it) and the fake LLM server on free ports, and
runs ``node --test`` against them.

Without Node (or without the npm registry, for the first install) the test is skipped with
the reason on a learner's machine, and fails in CI, where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import StreamStats
from course_app.runtime import LessonServer, set_pace

NODE_DIR = Path(__file__).parent / "node"
TEST_FILE = "ai_sdk_client.test.mjs"
INSTALL_HINT = (
    "install Node.js 18 or later with npm (Debian/Ubuntu: sudo apt-get install nodejs npm)"
)


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _pinned_ai_version() -> str:
    return json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["ai"]


def _installed_ai_version() -> str | None:
    installed = NODE_DIR / "node_modules" / "ai" / "package.json"
    return json.loads(installed.read_text())["version"] if installed.exists() else None


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned packages installed (``npm ci`` the first time)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable(f"the AI SDK client test needs Node.js and npm: {INSTALL_HINT}")
    assert node is not None and npm is not None
    if _installed_ai_version() != _pinned_ai_version():
        try:
            installed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            _unavailable(
                "npm ci in tests/node took more than 5 minutes (is the registry reachable?)"
            )
        if installed.returncode != 0:
            why = (installed.stderr or installed.stdout).strip().splitlines()[-3:]
            _unavailable(f"npm ci in tests/node failed (offline?): {' / '.join(why)}")
    return node


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[LessonServer, StreamStats]]:
    # Tokens 10 ms apart: a "count forever" answer is still running whenever the client acts.
    # The servers run in this process, so set_pace reaches them.
    set_pace(0.2)
    solution = load_exercise("13_capstone", "solutions")
    try:
        with LessonServer(create_fake_llm(), name="t13-node-llm") as fake:
            app = solution.create_app(llm_settings(fake.url))
            with LessonServer(app, name="t13-node-chat") as chat:
                yield chat, fake.app.state.streams  # type: ignore[union-attr]
    finally:
        set_pace(None)


def test_the_ai_sdk_client_streams_resumes_and_stops(
    node: str, service: tuple[LessonServer, StreamStats]
) -> None:
    chat, stats = service
    cancelled_before = stats.cancelled
    result = subprocess.run(
        [node, "--test", TEST_FILE],
        cwd=NODE_DIR,
        env={**os.environ, "CHAT_SERVICE_URL": chat.url, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"node --test failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    )
    assert "# fail 0" in result.stdout, result.stdout[-2000:]
    # Both Stops closed the upstream request: the fake LLM saw its client leave, twice.
    deadline = time.monotonic() + 5
    while stats.cancelled < cancelled_before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats.cancelled == cancelled_before + 2, stats
