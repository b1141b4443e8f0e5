"""Lesson 11's news feed (the app the exercise tests), its check and the `live_server` fixture."""

from __future__ import annotations

import ast
import json
import re
import textwrap
from pathlib import Path

import httpx
import httpx_sse
import pytest
from fastapi.testclient import TestClient

from course_app.checking import EXERCISES_DIR_ENV, run_check
from course_app.demos.news_feed import BUGS, create_app
from course_app.runtime import LessonServer

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "11_testing_streams.py"
NOTEBOOK = ROOT / "notebooks" / "11_testing_streams.ipynb"

pytest_plugins = ["pytester"]


def events(client: TestClient, **kwargs: object) -> list[tuple[str, str]]:
    with httpx_sse.connect_sse(client, "GET", "/feed", **kwargs) as source:  # type: ignore[arg-type]
        return [(sse.event, sse.id) for sse in source.iter_sse()]


def test_the_correct_feed_streams_numbered_news_then_done() -> None:
    with TestClient(create_app()) as client:
        assert events(client, params={"count": 2}) == [("news", "1"), ("news", "2"), ("done", "2")]
        resumed = events(client, params={"count": 3}, headers={"Last-Event-ID": "2"})
        assert resumed == [("news", "3"), ("done", "3")]
        failed = events(client, params={"count": 3, "fail_at": 2})
        assert [kind for kind, _ in failed] == ["news", "error"]


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"count": 0}, {}, 422),
        ({"count": 101}, {}, 422),
        ({"gap": -1}, {}, 422),
        ({"fail_at": 0}, {}, 422),
        ({}, {"Last-Event-ID": "abc"}, 400),
        ({}, {"Last-Event-ID": "-1"}, 400),
        ({}, {"Last-Event-ID": "1.5"}, 400),
        ({}, {"Last-Event-ID": "+1"}, 400),
        ({}, {"Last-Event-ID": "1234567890"}, 400),
    ],
)
def test_bad_input_is_a_clear_4xx_before_any_stream(
    params: dict[str, int], headers: dict[str, str], status: int
) -> None:
    with TestClient(create_app()) as client:
        response = client.get("/feed", params=params, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"


def test_an_unknown_bug_is_refused_with_the_list() -> None:
    with pytest.raises(ValueError, match="no_heartbeat"):
        create_app(bug="typo")


@pytest.mark.parametrize("bug", BUGS)
def test_every_bug_still_serves_a_stream(bug: str) -> None:
    """A bug changes what is streamed, never whether the app answers."""
    with TestClient(create_app(bug=bug)) as client:
        with client.stream("GET", "/feed", params={"count": 2}) as response:
            assert response.status_code == 200
            assert b"event: news" in response.read()


def test_live_server_fixture_serves_and_stops_after_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import httpx
        from course_app.checking import live_server
        from course_app.demos.news_feed import create_app
        from course_app.runtime import running_servers

        def test_one(live_server):
            first = live_server(create_app())
            second = live_server(create_app())
            assert httpx.get(first.url + "/feed?count=1").status_code == 200
            assert first.url != second.url

        def test_none_left_running():
            assert running_servers() == []
        """
    )
    # In a subprocess: an in-process run restores sys.modules afterwards, and modules it
    # imported for the first time (parts of httpcore) would be imported again by later tests
    # in this worker as new classes, which httpx then no longer recognises.
    # Without the plugins this run does not use: nbval (nbformat's imports) and Hypothesis
    # (its end-of-run summary imports all of it) cost ~3 s of CPU in a fresh pytest.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:nbval", "-p", "no:hypothesispytest",
        "-p", "no:xdist", "-o", "addopts=",
    )  # fmt: skip
    result.assert_outcomes(passed=2)


def test_the_feed_streams_over_real_http() -> None:
    with LessonServer(create_app(), name="t-news-feed") as server, httpx.Client() as http:
        params = {"count": 2, "gap": 0.3}
        with http.stream("GET", f"{server.url}/feed", params=params) as response:
            lines = list(response.iter_lines())
    assert ": ping" in lines  # a 0.3 s gap holds two 0.1 s pings


# Bytes a real client can send: uvicorn decodes header values as latin-1, so b"\xb2" is "²",
# which str.isdigit() accepts and int() refuses. TestClient re-encodes such values (the app
# would get "Â²"), so these go over a socket. 5000 digits: more than int() parses by default.
HOSTILE_IDS = [b"\xb2", b"\xb3", b"\xb9", b"1\xb2", b"\xd9\xa3", b"9" * 5000]


def test_a_last_event_id_that_is_not_ascii_digits_is_a_400_over_a_real_socket() -> None:
    with LessonServer(create_app(), name="t-news-feed-ids") as server, httpx.Client() as http:
        answers = [
            http.get(f"{server.url}/feed", headers={"Last-Event-ID": value})
            for value in HOSTILE_IDS
        ]
        resumed = http.get(f"{server.url}/feed?count=3", headers={"Last-Event-ID": b"2"})
    assert [(answer.status_code, answer.headers["content-type"]) for answer in answers] == [
        (400, "application/json")
    ] * len(HOSTILE_IDS)
    assert resumed.status_code == 200
    assert "id: 3" in resumed.text and "id: 2" not in resumed.text


def wire(bug: str | None, **params: object) -> tuple[list[str], list[int]]:
    """The chunks of a finite feed, and ``open_streams`` as each chunk reached the client."""
    app = create_app(bug)
    chunks, open_streams = [], []
    with TestClient(app) as client, client.stream("GET", "/feed", params=params) as response:
        for chunk in response.iter_text():
            chunks.append(chunk)
            open_streams.append(app.state.open_streams)
    return chunks, open_streams


def test_the_buffered_bug_sends_the_same_bytes_but_its_generator_is_already_done() -> None:
    """Only the server's state shows it: a test that times the events cannot catch it."""
    params = {"count": 3, "gap": 0.25, "fail_at": 3}
    correct, correct_open = wire(None, **params)
    buffered, buffered_open = wire("buffered", **params)
    assert buffered == correct  # pings included, one chunk per frame, as the correct feed
    assert correct_open[:-1] == [1] * (len(correct) - 1)  # the last one races the finally
    assert buffered_open == [0] * len(buffered)


def test_heartbeats_as_events_parse_like_comments_but_are_no_comments() -> None:
    """httpx-sse gives the same events for both: only the raw lines tell them apart."""
    params = {"count": 2, "gap": 0.3}
    parsed = {}
    for bug in (None, "heartbeat_as_event"):
        with TestClient(create_app(bug)) as client:
            with httpx_sse.connect_sse(client, "GET", "/feed", params=params) as source:
                parsed[bug] = [(sse.event, sse.data, sse.id) for sse in source.iter_sse()]
    assert parsed[None] == parsed["heartbeat_as_event"]
    assert ("message", "", "1") in parsed[None]  # a `: ping` after id 1
    assert [line for line in "".join(wire(None, **params)[0]).splitlines() if line[:1] == ":"]
    raw = "".join(wire("heartbeat_as_event", **params)[0]).splitlines()
    assert [line for line in raw if line[:1] == ":"] == []
    assert raw.count("data:") == 2  # a browser dispatches each as an empty message


# Plausible wrong tests of the exercise: a clock instead of the server's state, and the
# parser's empty `message` events instead of raw `:` lines. The check must reject both. The
# clock's margin is wide (10 s) so that the correct feed passes it even on a loaded machine:
# what the check rejects is the technique, with the message that names it.
CLOCK_TEST = """
def test_the_server_is_still_streaming_at_each_news_event(feed_app, client):
    start = time.monotonic()
    params = {"count": 3, "gap": 10}
    with httpx_sse.connect_sse(client, "GET", "/feed", params=params) as source:
        events = source.iter_sse()
        first = next(events)
        elapsed = time.monotonic() - start
    assert first.event == "news"
    assert elapsed < 10  # it did not wait the 20 s that building the whole body takes
"""
PARSER_QUIRK_TEST = """
def test_an_idle_stream_sends_heartbeats(client):
    params = {"count": 2, "gap": 0.5}
    with httpx_sse.connect_sse(client, "GET", "/feed", params=params) as source:
        events = list(source.iter_sse())
    heartbeats = [sse for sse in events if sse.event == "message" and sse.data == ""]
    assert len(heartbeats) >= 1
"""


def with_tests_replaced(source: str, replacements: dict[str, str]) -> str:
    """``source`` (a module) with the named top-level functions replaced by other code."""
    lines = source.splitlines(keepends=True)
    functions = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name in replacements
    ]
    assert len(functions) == len(replacements), "a test to replace is not in the solution"
    for node in sorted(functions, key=lambda node: node.lineno, reverse=True):
        code = textwrap.dedent(replacements[node.name]).strip() + "\n"
        lines[node.lineno - 1 : node.end_lineno] = [code]
    return "".join(lines)


class TestTheCheck:
    """A class of its own: pytest-xdist's loadscope runs this slow check on another worker."""

    @pytest.mark.timeout(600)
    def test_it_rejects_a_clock_and_a_parser_quirk_naming_the_cause(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The reference solution with its state and raw-line tests swapped for wrong ones."""
        wrong = with_tests_replaced(
            SOLUTION.read_text(encoding="utf-8"),
            {
                "test_the_server_is_still_streaming_at_each_news_event": CLOCK_TEST,
                "test_an_idle_stream_sends_heartbeats": PARSER_QUIRK_TEST,
            },
        )
        (tmp_path / SOLUTION.name).write_text(wrong, encoding="utf-8")
        monkeypatch.setenv(EXERCISES_DIR_ENV, str(tmp_path))
        result = run_check("11", "exercises")
        failing = {o.nodeid.rpartition("::")[2]: o for o in result.outcomes if not o.passed}
        assert sorted(failing) == ["test_caught_buffered", "test_caught_heartbeat_as_event"], (
            result.render()
        )
        buffered, heartbeat = (
            failing["test_caught_buffered"],
            failing["test_caught_heartbeat_as_event"],
        )
        assert "a clock cannot tell" in buffered.reason and "open_streams" in buffered.reason
        assert "no clock can tell" in buffered.hint
        assert "httpx-sse gives the same empty" in heartbeat.reason
        assert "raw lines" in heartbeat.hint


def _code_lines(text: str) -> list[str]:
    """Non-blank, non-comment lines, stripped (indentation and trailing comments aside)."""
    lines = (line.split("  #")[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_no_notebook_cell_holds_the_solution() -> None:
    """Transfer: no cell holds six consecutive lines of a BEGIN/END SOLUTION block."""
    blocks = re.findall(
        r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", SOLUTION.read_text(encoding="utf-8"), re.S
    )
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    windows = {
        tuple(lines[i : i + 6])
        for block in blocks
        for lines in [_code_lines(block)]
        for i in range(len(lines) - 5)
    }
    copied = [
        window
        for cell in code
        for lines in [_code_lines(cell)]
        for i in range(len(lines) - 5)
        if (window := tuple(lines[i : i + 6])) in windows
    ]
    assert blocks and not copied, copied
