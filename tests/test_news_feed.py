"""Lesson 11's news feed (the app the exercise tests) and the `live_server` fixture."""

from __future__ import annotations

import httpx
import httpx_sse
import pytest
from fastapi.testclient import TestClient

from course_app.news_feed import BUGS, create_app

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
        from course_app.live_server import live_server
        from course_app.news_feed import create_app
        from course_app.server import running_servers

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
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "addopts=")
    result.assert_outcomes(passed=2)


def test_the_feed_streams_over_real_http() -> None:
    from course_app import LessonServer

    with LessonServer(create_app(), name="t-news-feed") as server, httpx.Client() as http:
        params = {"count": 2, "gap": 0.3}
        with http.stream("GET", f"{server.url}/feed", params=params) as response:
            lines = list(response.iter_lines())
    assert ": ping" in lines  # a 0.3 s gap holds two 0.1 s pings
