"""Lesson 13's chat service against a real client: the Vercel AI SDK (npm ``ai``) in Node.

``tests/node/`` pins the ``ai`` package (``package.json`` and its lock file); its test drives
the service with the SDK's own ``DefaultChatTransport`` and ``readUIMessageStream``: a whole
answer and the next turn with its history, 204 after the end, resume after a dropped
connection, Stop, an upstream 429. This wrapper installs the pinned packages once
(``npm ci``, into ``tests/node/node_modules``, by ``tests/node_client.py``), starts the
service (the reference solution's app, as ``course serve 13 --solution`` runs it) and the
fake LLM server on free ports, and runs ``node --test`` against them.

Without Node (or without the npm registry, for the first install) the test is skipped with
the reason on a learner's machine, and fails in CI, where it must run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import StreamStats
from course_app.runtime import LessonServer, set_pace
from tests.node_client import node_binary, run_node_tests

TEST_FILE = "ai_sdk_client.test.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned packages installed (``npm ci`` the first time)."""
    return node_binary()


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
    run_node_tests(node, TEST_FILE, {"CHAT_SERVICE_URL": chat.url})
    # Both Stops closed the upstream request: the fake LLM saw its client leave, twice.
    deadline = time.monotonic() + 5
    while stats.cancelled < cancelled_before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats.cancelled == cancelled_before + 2, stats
