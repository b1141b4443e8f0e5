"""Lesson 09: the hub that disconnects slow subscribers and replays by id.

The hub is tested on its own first (no network), then inside the lesson's app
(``course_app.demos.broadcast_app``) on a real server: 100 clients, a client that stops reading,
and two app instances that share one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar

import httpx
import httpx_sse
import pytest

from course_app.demos.broadcast_app import create_app
from course_app.runtime import LessonServer
from course_app.services import RedisServer
from course_app.streams import Message, MissedEvents

# verify=False on loopback clients: plain HTTP, and no CA bundle to load (0.05-0.2 s of CPU each).
T = TypeVar("T")


def drain(subscription: object) -> list[Message]:
    """What a subscription holds now, without waiting (the test's own loop runs it).

    A message the subscription holds comes out within a turn or two of the event loop
    (a queue's get() does not wait when the queue has one): one still pending after ten
    turns is a wait for a message nobody has published, so it is cancelled, not timed out.
    """

    async def take() -> list[Message]:
        got = []
        with contextlib.suppress(StopAsyncIteration):
            while True:
                pending = asyncio.ensure_future(anext(subscription))  # type: ignore[call-overload]
                for _ in range(10):
                    if pending.done():
                        break
                    await asyncio.sleep(0)
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
                    return got
                got.append(pending.result())
        return got

    return asyncio.run(take())


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """Run an in-process scenario; a message that never comes fails it after 5 s, not 15."""

    async def bounded() -> T:
        try:
            async with asyncio.timeout(5):
                return await scenario
        except TimeoutError:
            pytest.fail("a subscriber waited 5 s for a message that never came")

    return asyncio.run(bounded())


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------------- the hub alone


def test_publish_numbers_messages_and_keeps_given_ids(exercise: ModuleType) -> None:
    """publish() numbers messages "1", "2", "3" and keeps an id it is given as it is

    Where does the hub remember the last number it gave? What must publish() return, and
    which id does a message published with id="1700000000000-0" (a Redis id) get?
    """
    hub = exercise.Hub()
    got = [hub.publish("message", f'"{text}"') for text in "abc"]
    assert got == [
        Message("1", "message", '"a"'),
        Message("2", "message", '"b"'),
        Message("3", "message", '"c"'),
    ]
    assert hub.publish("notification", "{}", id="1700000000000-0").id == "1700000000000-0"


def test_a_subscriber_gets_every_message_in_order(exercise: ModuleType) -> None:
    """a subscriber receives every message published after it joined, in order

    Who puts a published message into each subscriber's queue, and which end of the queue
    does __anext__ take from? Messages published before subscribe() are not live messages.
    """

    async def scenario() -> list[Message]:
        hub = exercise.Hub()
        hub.publish("message", "before")
        subscription = hub.subscribe()
        for n in range(5):
            hub.publish("message", str(n))
        return [await anext(subscription) for _ in range(5)]

    assert [m.data for m in run(scenario())] == ["0", "1", "2", "3", "4"]


def test_waiting_can_time_out_without_losing_a_message(exercise: ModuleType) -> None:
    """a subscriber waiting for a message can time out, wait again, and lose nothing

    The app waits for the next message with a timeout (to send heartbeats). What happens to
    a message if __anext__ took it off the queue and was then cancelled? asyncio.Queue.get()
    is safe to cancel.
    """

    async def scenario() -> tuple[bool, Message]:
        hub = exercise.Hub()
        subscription = hub.subscribe()
        timed_out = False
        try:
            async with asyncio.timeout(0.05):
                await anext(subscription)
        except TimeoutError:
            timed_out = True
        hub.publish("message", "after the timeout")
        async with asyncio.timeout(5):
            return timed_out, await anext(subscription)

    timed_out, message = run(scenario())
    assert timed_out, "__anext__ returned although nothing was published: it must wait"
    assert message == Message("1", "message", "after the timeout")


def test_a_hundred_subscribers_each_get_everything(exercise: ModuleType) -> None:
    """100 subscribers each receive all 20 messages, in order

    Does publish() offer each message to every subscriber, and does subscribe() add the new
    subscriber to the hub's set so that publish() can find it?
    """

    async def scenario() -> list[list[str]]:
        hub = exercise.Hub(queue_size=50)
        subscriptions = [hub.subscribe() for _ in range(100)]
        assert hub.subscribers == 100
        for n in range(20):
            hub.publish("message", str(n))
        return [[(await anext(s)).id for _ in range(20)] for s in subscriptions]

    expected = [str(n) for n in range(1, 21)]
    assert run(scenario()) == [expected] * 100


def test_a_stalled_subscriber_is_disconnected(exercise: ModuleType) -> None:
    """a subscriber that stops reading is disconnected when its queue is full; others get all

    What does put_nowait() raise on a full asyncio.Queue? After that, which flag says why
    the subscriber was dropped, and what does its __anext__ do even with messages queued?
    publish() itself must never wait.
    """

    async def scenario() -> tuple[object, object, list[str]]:
        hub = exercise.Hub(queue_size=5)
        stalled = hub.subscribe()
        reader = hub.subscribe()
        received = []
        for n in range(100):
            hub.publish("message", str(n))
            received.append((await anext(reader)).data)  # this one keeps up
        return hub, stalled, received

    hub, stalled, received = run(scenario())
    assert received == [str(n) for n in range(100)]
    assert stalled.too_slow, "the stalled subscriber's queue filled up: mark it too_slow"
    assert stalled.closed, "a subscriber that is too slow is disconnected: close() it"
    assert hub.subscribers == 1, "only the reader is still subscribed"
    assert drain(stalled) == [], "a disconnected subscriber gets nothing more: its stream ends"


def test_subscribe_after_an_id_replays_then_goes_live(exercise: ModuleType) -> None:
    """subscribe(after=id) replays the kept messages after that id, then the live ones

    Which kept messages come after id "2", and does id "2" itself come again? A message
    published after subscribe() returns must come once, after the replayed ones.
    """

    async def scenario() -> list[str]:
        hub = exercise.Hub()
        for n in range(1, 5):
            hub.publish("message", str(n))
        subscription = hub.subscribe(after="2")
        hub.publish("message", "5")
        return [(await anext(subscription)).id for _ in range(3)]

    assert run(scenario()) == ["3", "4", "5"]
    hub = exercise.Hub()
    hub.publish("message", "only")
    assert drain(hub.subscribe(after="1")) == [], "after the newest id, nothing is replayed"


def test_an_id_the_hub_no_longer_keeps_raises_missed_events(exercise: ModuleType) -> None:
    """subscribe(after=...) raises MissedEvents for an id the history no longer (or never) held

    With history=3 and five messages, which ids are kept? Can a client whose last id is "1"
    be brought up to date? And one whose id the hub never gave ("42")?
    """

    hub = exercise.Hub(history=3)
    for n in range(5):
        hub.publish("message", str(n))
    for gone in ("1", "42"):
        with pytest.raises(MissedEvents):
            hub.subscribe(after=gone)
    assert [m.id for m in drain(hub.subscribe(after="3"))] == ["4", "5"]


def test_notices_are_live_only(exercise: ModuleType) -> None:
    """notice() reaches the current subscribers, but is not kept for replay

    notice() is given: it calls your _offer() with a message whose id is "". Does your
    publish() keep messages in the history, and is that the only place that does?
    """

    hub = exercise.Hub()
    live = hub.subscribe()
    hub.publish("message", "kept")
    hub.notice("status", '{"redis": "down"}')
    hub.publish("message", "kept too")
    received = drain(live)
    replayed = drain(hub.subscribe(after="1"))
    assert [(m.id, m.event) for m in received] == [
        ("1", "message"),
        ("", "status"),
        ("2", "message"),
    ]
    assert [m.id for m in replayed] == ["2"]


def test_close_ends_a_waiting_subscriber(exercise: ModuleType) -> None:
    """close() ends a subscriber that is waiting for a message, and the hub forgets it

    close() (given) puts a None in the queue to wake the reader up. What must __anext__ do
    when it gets None instead of a Message?
    """

    async def scenario() -> tuple[bool, int]:
        hub = exercise.Hub()
        subscription = hub.subscribe()
        waiting = asyncio.create_task(anext(subscription))
        await asyncio.sleep(0.01)
        hub.close()
        try:
            async with asyncio.timeout(5):
                await waiting
        except StopAsyncIteration:
            return True, hub.subscribers
        return False, hub.subscribers

    ended, left = run(scenario())
    assert ended, "after close(), __anext__ must raise StopAsyncIteration"
    assert left == 0


def test_a_closed_subscription_ends_at_once_every_time(exercise: ModuleType) -> None:
    """after close(), every __anext__ raises StopAsyncIteration at once, even with messages left

    close() has run: the client will resume from its own last id, so nothing more may come
    out of this subscription, not the replayed backlog, not the queue. Which flag does
    close() set, and does __anext__ look at it *before* the backlog and the queue? Waiting
    on the empty queue again is not ending: the second call after close() must end too.
    """

    async def after_close(subscription: object) -> list[str]:
        outcomes = []
        for _ in range(2):
            try:
                async with asyncio.timeout(1):
                    message = await anext(subscription)  # type: ignore[call-overload]
                outcomes.append(f"returned message {message.id} ({message.data})")
            except StopAsyncIteration:
                outcomes.append("StopAsyncIteration")
            except TimeoutError:
                outcomes.append("waited 1 s for a message instead of ending")
        return outcomes

    async def scenario() -> dict[str, list[str]]:
        hub = exercise.Hub()
        for n in range(1, 6):
            hub.publish("message", f"m{n}")
        replaying = hub.subscribe(after="2")  # a backlog of three: m3, m4, m5
        first = await anext(replaying)
        assert first.id == "3", f"the backlog starts after id 2, not at {first.id}"
        live = hub.subscribe()
        hub.publish("message", "m6")  # queued for `live`
        replaying.close()
        live.close()
        return {
            "closed with a backlog left": await after_close(replaying),
            "closed with a message queued": await after_close(live),
        }

    ended = ["StopAsyncIteration", "StopAsyncIteration"]
    assert run(scenario()) == {
        "closed with a backlog left": ended,
        "closed with a message queued": ended,
    }


# ---------------------------------------------------------------- the hub in the app


def hub_ready(exercise: ModuleType) -> None:
    """Surface a TODO in-process, where its message is readable, not as a server error."""

    async def probe() -> None:
        hub = exercise.Hub()
        subscription = hub.subscribe()
        hub.publish("message", "probe")
        await anext(subscription)

    run(probe())


def small_hub(exercise: ModuleType) -> object:
    return exercise.Hub(queue_size=8)


@pytest.fixture(scope="module")
def app_server(exercise: ModuleType) -> Iterator[LessonServer]:
    """The lesson's app on one server for the module (a start and a stop cost more than a
    test here); each test gets a hub of its own, see `server`."""
    app = create_app(hub_factory=lambda: small_hub(exercise), heartbeat=60)
    with LessonServer(app, name="t09-app") as running:
        yield running


@pytest.fixture
def server(exercise: ModuleType, request: pytest.FixtureRequest) -> Iterator[LessonServer]:
    """The app with a new hub, as a fresh start would make it (the routes use app.state.hub)."""
    hub_ready(exercise)
    running: LessonServer = request.getfixturevalue("app_server")
    hub = running.app.state.hub = small_hub(exercise)  # type: ignore[union-attr]
    yield running
    hub.close()  # as the app's shutdown does: the test's open streams end


def hub_of(server: LessonServer) -> object:
    return server.app.state.hub  # type: ignore[union-attr]


def post(http: httpx.Client, server: LessonServer, text: str) -> httpx.Response:
    body = {"event": "message", "data": {"author": "test", "text": text}}
    response = http.post(server.url + "/messages", json=body)
    assert response.status_code == 202, response.text
    return response


async def sse_events(port: int, path: str) -> AsyncIterator[httpx_sse.ServerSentEvent]:
    """The events of a GET of an SSE stream over a bare asyncio connection.

    100 httpx clients in one process cost a second of CPU on a small machine, more than the
    server they test: this reads HTTP/1.1's chunked body and parses SSE by hand instead.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        assert head.split()[1] == "200", f"GET {path} answered {head.split()[1]}"
        assert "transfer-encoding: chunked" in head, head
        text = ""
        while size := int((await reader.readline()).split(b";")[0], 16):
            text += (await reader.readexactly(size + 2))[:-2].decode()
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            *blocks, text = text.split("\n\n")
            for block in blocks:
                fields: dict[str, list[str]] = {}
                for line in block.split("\n"):
                    name, _, value = line.partition(":")
                    fields.setdefault(name, []).append(value.removeprefix(" "))
                if "data" in fields or "event" in fields:
                    yield httpx_sse.ServerSentEvent(
                        event=fields.get("event", ["message"])[-1],
                        data="\n".join(fields.get("data", [])),
                        id=fields.get("id", [""])[-1],
                    )
    finally:
        writer.close()


def test_a_hundred_clients_of_the_app_each_get_every_message(server: LessonServer) -> None:
    """100 clients of the app each receive every message with its id, in order

    The app calls hub.subscribe() for each client and hub.publish() for each POST. If the
    hub checks above pass, this should too; if not, look at subscribe() and publish().
    """
    count = 10

    async def client() -> list[tuple[str, str]]:
        got = []
        async for sse in sse_events(server.port, "/stream"):
            if sse.event == "message":
                got.append((sse.id, json.loads(sse.data)["text"]))
                if len(got) == count:
                    return got
        return got

    async def scenario() -> list[list[tuple[str, str]]]:
        async with httpx.AsyncClient(timeout=10, verify=False) as http:
            clients = [asyncio.create_task(client()) for _ in range(100)]
            deadline = time.monotonic() + 6
            while hub_of(server).subscribers < 100:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the 100 clients did not all subscribe"
                await asyncio.sleep(0.02)
            for n in range(count):
                body = {"event": "message", "data": {"author": "test", "text": f"m{n}"}}
                assert (await http.post(server.url + "/messages", json=body)).status_code == 202
            async with asyncio.timeout(6):
                return await asyncio.gather(*clients)

    expected = [(str(n + 1), f"m{n}") for n in range(count)]
    assert asyncio.run(scenario()) == [expected] * 100  # its own bounded waits: 6 s + 6 s


def test_a_stalled_client_is_cut_off_and_a_resuming_one_misses_nothing(
    server: LessonServer,
) -> None:
    """a client that stops reading is disconnected; one that resumes with Last-Event-ID misses nothing

    A client that does not read lets the server's socket buffers fill, then its queue: your
    _offer() must drop it. The other client may be dropped too when it falls behind; it
    reconnects with Last-Event-ID, and subscribe(after=...) must replay exactly what it missed.
    """
    hub = hub_of(server)

    @server.app.post("/test-burst")  # type: ignore[union-attr]
    async def burst(count: int, size: int) -> dict[str, str]:
        # Several big messages at once: it takes megabytes to fill the socket buffers.
        for _ in range(count):
            last = hub.publish("message", json.dumps({"author": "t", "text": "x" * size}))  # type: ignore[attr-defined]
        return {"id": last.id}

    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")  # and never reads
    try:
        wait_for(lambda: hub.subscribers == 1, "the stalled client subscribed")  # type: ignore[attr-defined]
        stalled_subscription = next(iter(hub.subscriptions))  # type: ignore[attr-defined]

        received: list[str] = []
        connections = 0
        last_id = ""
        done = threading.Event()

        def reader() -> None:
            nonlocal connections, last_id
            with httpx.Client(timeout=10, verify=False) as http:
                while not done.is_set() and connections < 500:
                    connections += 1
                    headers = {"Last-Event-ID": last_id} if last_id else {}
                    with contextlib.suppress(httpx.TransportError):
                        with httpx_sse.connect_sse(
                            http, "GET", server.url + "/stream", headers=headers
                        ) as source:
                            for sse in source.iter_sse():
                                if sse.event == "message":
                                    received.append(sse.id)
                                    last_id = sse.id
                                    if json.loads(sse.data)["text"] == "last":
                                        done.set()
                                        return

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        wait_for(lambda: hub.subscribers == 2, "the reading client subscribed")  # type: ignore[attr-defined]
        bursts = 0
        with httpx.Client(timeout=10, verify=False) as http:
            while not stalled_subscription.too_slow and bursts < 200:
                answer = http.post(server.url + "/test-burst", params={"count": 6, "size": 16_000})
                assert answer.status_code == 200, answer.text
                bursts += 1
            last = post(http, server, "last").json()["id"]
        thread.join(8)
        assert stalled_subscription.too_slow, f"still subscribed after {bursts * 6} messages"
        assert received == [str(n) for n in range(1, int(last) + 1)], (
            f"the reading client got {len(received)} of {last} messages over"
            f" {connections} connections: some missing or repeated"
        )
    finally:
        done.set()
        stalled.close()


# ---------------------------------------------------------------- across workers: Redis


@contextlib.contextmanager
def servers_together(*apps: object) -> Iterator[list[LessonServer]]:
    """A server for each app, started in turn and stopped at the same time: a stop waits for
    uvicorn's 0.1 s tick and the app's shutdown, so two in a row cost twice that."""
    servers: list[LessonServer] = []
    try:
        for n, app in enumerate(apps):
            servers.append(LessonServer(app, name=f"t09-{'ab'[n]}").start())
        yield servers
    finally:
        with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
            for stopped in [pool.submit(server.stop) for server in servers]:
                stopped.result()  # a server that did not stop fails the test


def test_two_app_instances_share_messages_through_redis(
    exercise: ModuleType, redis_server: RedisServer
) -> None:
    """two app instances sharing one Redis: a message published to one reaches the clients of both

    With a Redis URL, the app's relay calls your publish() with the Redis entry id for
    every message, on every instance. Does publish() keep an id it is given? Resuming on
    the other instance then works with that id.
    """
    hub_ready(exercise)

    def make() -> object:
        return create_app(hub_factory=exercise.Hub, redis_url=redis_server.url, redis_retry=0.05)

    with (
        servers_together(make(), make()) as (a, b),
        httpx.Client(timeout=10, verify=False) as http,
    ):
        for instance in (a, b):
            wait_for(lambda i=instance: i.app.state.relay.up, "the app reached Redis")

        got: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}

        def listen(name: str, instance: LessonServer) -> None:
            with (
                httpx.Client(timeout=10, verify=False) as own,
                httpx_sse.connect_sse(own, "GET", instance.url + "/stream") as source,
            ):
                for sse in source.iter_sse():
                    if sse.event == "message":
                        got[name].append((sse.id, json.loads(sse.data)["text"]))
                        return

        threads = [threading.Thread(target=listen, args=item) for item in (("a", a), ("b", b))]
        for thread in threads:
            thread.start()
        wait_for(
            lambda: hub_of(a).subscribers == 1 and hub_of(b).subscribers == 1,  # type: ignore[attr-defined]
            "a client listened on each instance",
        )
        first = post(http, a, "published on a").json()["id"]
        for thread in threads:
            thread.join(5)
        assert got == {"a": [(first, "published on a")], "b": [(first, "published on a")]}

        second = post(http, b, "published on b").json()["id"]
        with httpx_sse.connect_sse(
            http, "GET", a.url + "/stream", headers={"Last-Event-ID": first}
        ) as source:
            resumed = next(
                (sse.id, json.loads(sse.data)["text"])
                for sse in source.iter_sse()
                if sse.event == "message"
            )
        assert resumed == (second, "published on b")
