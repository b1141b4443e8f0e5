"""course_app.streams.hub (drop-oldest fan-out with replay) and course_app.demos.broadcast_app (lesson 09's app),
in one process and on a real Redis: typed events, bad input, Redis going away and coming back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import httpx_sse
import pytest

from course_app.demos.broadcast_app import MAX_BODY, create_app
from course_app.runtime import LessonServer
from course_app.services import REDIS_HINT, RedisServer, redis_binary
from course_app.streams import Hub, Message, MissedEvents
from tests.unavailable import unavailable


def take(subscription: object, timeout: float = 0.05) -> list[Message]:
    """What a subscription yields until it waits for ``timeout`` or ends."""

    async def main() -> list[Message]:
        got = []
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            while True:
                async with asyncio.timeout(timeout):
                    got.append(await anext(subscription))  # type: ignore[call-overload]
        return got

    return asyncio.run(main())


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------- the hub


def test_drop_oldest_then_lagged_then_the_newest() -> None:
    hub = Hub(queue_size=3)
    slow = hub.subscribe()
    for n in range(10):
        hub.publish("tick", str(n))
    assert slow.pending == 3 and slow.missed == 7
    got = take(slow)
    assert [(m.id, m.event, m.data) for m in got] == [
        ("", "lagged", '{"missed": 7}'),
        ("8", "tick", "7"),
        ("9", "tick", "8"),
        ("10", "tick", "9"),
    ]


def test_replay_after_an_id_then_live_and_missed_events() -> None:
    hub = Hub(history=3)
    for n in range(5):
        hub.publish("tick", str(n))
    subscription = hub.subscribe(after="3")
    hub.publish("tick", "5")
    assert [m.id for m in take(subscription)] == ["4", "5", "6"]
    for gone in ("2", "nope"):
        with pytest.raises(MissedEvents, match=f"after id '{gone}'"):
            hub.subscribe(after=gone)
    assert hub.last_id == "6"


def test_given_ids_and_notices() -> None:
    hub = Hub()
    live = hub.subscribe()
    hub.publish("message", "a", id="1700000000000-0")
    hub.notice("status", "down")
    assert [(m.id, m.event) for m in take(live)] == [("1700000000000-0", "message"), ("", "status")]
    assert take(hub.subscribe(after="1700000000000-0")) == []


def test_waiting_is_safe_to_cancel_and_close_ends_readers() -> None:
    async def main() -> tuple[Message, bool, int]:
        hub = Hub()
        subscription = hub.subscribe()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.01):
                await anext(subscription)
        hub.publish("tick", "kept")
        message = await anext(subscription)
        waiting = asyncio.create_task(anext(subscription))
        await asyncio.sleep(0)
        hub.close()
        ended = False
        try:
            await waiting
        except StopAsyncIteration:
            ended = True
        return message, ended, hub.subscribers

    assert asyncio.run(main()) == (Message("1", "tick", "kept"), True, 0)


# --------------------------------------------------------------------- the app, one process


@pytest.fixture
def server() -> Iterator[LessonServer]:
    with LessonServer(create_app(heartbeat=0.2), name="t-hub-app") as running:
        yield running


def events(
    url: str,
    count: int,
    headers: dict[str, str] | None = None,
    until: Callable[[list], bool] | None = None,
) -> list[tuple[str, str, dict]]:
    """The first ``count`` events, or fewer once ``until(events)``: (event, id, data)."""
    got = []
    with (
        httpx.Client(timeout=10) as http,
        httpx_sse.connect_sse(http, "GET", url + "/stream", headers=headers or {}) as source,
    ):
        for sse in source.iter_sse():
            got.append((sse.event, sse.id, json.loads(sse.data)))
            if len(got) == count or (until is not None and until(got)):
                break
    return got


def test_typed_events_on_one_stream(server: LessonServer) -> None:
    hub = server.app.state.hub  # type: ignore[union-attr]
    got: list = []

    # init, the two messages, and heartbeats between or after them: under load a heartbeat can
    # come between the two posts, so read until both messages and a heartbeat are in.
    def done(received: list) -> bool:
        kinds = [kind for kind, _, _ in received]
        return "message" in kinds and "heartbeat" in kinds[kinds.index("message") :]

    listener = threading.Thread(target=lambda: got.extend(events(server.url, 200, until=done)))
    listener.start()
    wait_for(lambda: hub.subscribers == 1, "the client subscribed")
    notification = {"event": "notification", "data": {"title": "deploy done", "level": "info"}}
    message = {"event": "message", "data": {"author": "ada", "text": "hi"}}
    assert httpx.post(server.url + "/messages", json=notification).json()["id"] == "1"
    assert httpx.post(server.url + "/messages", json=message).json()["id"] == "2"
    listener.join(10)
    (init, _, init_data), *rest = got
    assert init == "init" and init_data["worker"] == os.getpid()
    assert init_data["time"].endswith("Z")  # aware UTC; a naive time would have no offset
    assert [event for event in rest if event[0] != "heartbeat"][:2] == [
        ("notification", "1", {"title": "deploy done", "level": "info"}),
        ("message", "2", {"author": "ada", "text": "hi"}),
    ]
    heartbeats = [data for kind, _, data in rest if kind == "heartbeat"]
    assert heartbeats and all(beat["time"].endswith("Z") for beat in heartbeats)


def test_resume_and_reset(server: LessonServer) -> None:
    for n in range(3):
        body = {"event": "message", "data": {"author": "a", "text": str(n)}}
        httpx.post(server.url + "/messages", json=body)
    resumed = events(server.url, 3, {"Last-Event-ID": "1"})
    assert [(e, i) for e, i, _ in resumed] == [("init", ""), ("message", "2"), ("message", "3")]
    reset = events(server.url, 2, {"Last-Event-ID": "99"})
    assert reset[1] == ("reset", "", {"after": "99", "reason": "the events after it are not kept"})


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 422),  # not JSON
        (b'{"event": "alert", "data": {}}', 422),  # no such event type
        (b'{"event": "message", "data": {"author": "a"}}', 422),  # a field missing
        (b'{"event": "message", "data": {"author": "a", "text": ""}}', 422),  # empty text
        (b"x" * (MAX_BODY + 1), 413),  # too big
    ],
)
def test_bad_publish_bodies_are_4xx(server: LessonServer, body: bytes, status: int) -> None:
    response = httpx.post(
        server.url + "/messages", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status


def test_a_big_body_without_content_length_is_413_too(server: LessonServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 1000 + 2):
            yield b" " * 1000

    response = httpx.post(server.url + "/messages", content=chunks())
    assert response.status_code == 413


def test_a_last_event_id_that_is_no_id_is_400(server: LessonServer) -> None:
    with httpx.Client() as http:
        response = http.get(server.url + "/stream", headers={"Last-Event-ID": "9" * 100})
    assert response.status_code == 400


# ---------------------------------------------------------------------------- on Redis


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if redis_binary() is None:
        message = f"these tests need redis-server: {REDIS_HINT}"
        unavailable(message)
    with RedisServer(name="t-hub-redis") as running:
        yield running


def redis_app(url: str, **options: object) -> object:
    return create_app(redis_url=url, redis_retry=0.05, heartbeat=60, **options)  # type: ignore[arg-type]


def post(server: LessonServer, text: str) -> httpx.Response:
    body = {"event": "message", "data": {"author": "t", "text": text}}
    return httpx.post(server.url + "/messages", json=body)


def test_two_instances_share_messages_and_ids(redis_server: RedisServer) -> None:
    with (
        LessonServer(redis_app(redis_server.url), name="t-hub-a") as a,
        LessonServer(redis_app(redis_server.url), name="t-hub-b") as b,
    ):
        for instance in (a, b):
            wait_for(lambda i=instance: i.app.state.relay.up, "the relay reached Redis")
        first = post(a, "one").json()["id"]
        second = post(b, "two").json()["id"]
        # Each instance relays both, with the same ids: resume anywhere.
        for instance in (a, b):
            got = events(instance.url, 2, {"Last-Event-ID": first})
            assert got[1] == ("message", second, {"author": "t", "text": "two"})


def test_a_late_instance_loads_the_kept_entries(redis_server: RedisServer) -> None:
    with LessonServer(redis_app(redis_server.url, history=3), name="t-hub-a") as a:
        wait_for(lambda: a.app.state.relay.up, "the relay reached Redis")
        ids = [post(a, str(n)).json()["id"] for n in range(5)]
    with LessonServer(redis_app(redis_server.url, history=3), name="t-hub-late") as late:
        wait_for(lambda: late.app.state.relay.up, "the relay reached Redis")
        got = events(late.url, 3, {"Last-Event-ID": ids[2]})
        assert [(e, i) for e, i, _ in got] == [
            ("init", ""),
            ("message", ids[3]),
            ("message", ids[4]),
        ]
        # ids[0] and ids[1] were trimmed from the stream (MAXLEN 3): the client is told.
        told = events(late.url, 2, {"Last-Event-ID": ids[0]})
        assert told[1][0] == "reset"


def test_redis_going_away_and_coming_back(redis_server: RedisServer) -> None:
    with LessonServer(redis_app(redis_server.url), name="t-hub-a") as a:
        wait_for(lambda: a.app.state.relay.up, "the relay reached Redis")
        got: list = []
        listener = threading.Thread(target=lambda: got.extend(events(a.url, 5)))
        listener.start()
        wait_for(lambda: a.app.state.hub.subscribers == 1, "the client subscribed")
        before = post(a, "before").json()["id"]
        redis_server.stop(keep_data=True)  # down; start() brings it back on the same port
        wait_for(lambda: a.app.state.relay.up is False, "the relay noticed")
        refused = post(a, "while down")
        assert refused.status_code == 503
        assert refused.json()["detail"].startswith("Redis is unreachable, try again later")
        redis_server.start()
        wait_for(lambda: a.app.state.relay.up, "the relay came back")
        after = post(a, "after").json()["id"]
        listener.join(10)
    assert [(e, i) for e, i, _ in got] == [
        ("init", ""),
        ("message", before),
        ("status", before),  # httpx-sse repeats the last id on events without one
        ("status", before),
        ("message", after),
    ]
    assert [d.get("redis") for _, _, d in got[2:4]] == ["down", "up"]


def test_redis_down_at_startup_is_one_log_line_and_recovers(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.stop(keep_data=True)
    with LessonServer(redis_app(url), name="t-hub-early") as early:
        wait_for(lambda: early.app.state.relay.up is False, "the relay tried")
        status = events(early.url, 2)[1]
        assert status[0] == "status" and status[2]["redis"] == "down"
        assert post(early, "too early").status_code == 503
        warnings = [line for line in early.logs if "unreachable" in line]
        assert len(warnings) == 1 and "Traceback" not in "\n".join(early.logs)
        redis_server.start()
        wait_for(lambda: early.app.state.relay.up, "the relay reached Redis")
        assert post(early, "now").status_code == 202
