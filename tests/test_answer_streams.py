"""course_app.streams.answer_streams: lesson 13's answers in Redis, resumed and stopped from any process.

Two instances of the lesson's app (the reference solution's), each with its own memory, share
one Redis, as two worker processes would: whatever one starts, the other can replay, refuse
a second time, and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import pytest

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import StreamStats
from course_app.runtime import LessonServer
from course_app.services import (
    PoolExhausted,
    RedisServer,
    WorkerProcesses,
    redis_client,
    start_workers,
)
from course_app.streams import (
    INTERRUPTED,
    SHUT_DOWN,
    STOPPED,
    TRIMMED,
    AnswerStream,
    RedisAnswerStore,
    StoreBusy,
)
from course_app.streams import ui_message_stream as ui

BOUND = 5.0


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[LessonServer]:
    # "count forever" is cut by the relay at 20,000 pieces: 20 s at the suite's pace.
    with LessonServer(create_fake_llm(), name="t13-answers-llm") as server:
        yield server


@pytest.fixture
def two_workers(
    redis_server: RedisServer, fake_llm: LessonServer
) -> Iterator[tuple[LessonServer, LessonServer]]:
    solution = load_exercise("13_capstone", "solutions")
    settings = llm_settings(fake_llm.url)
    with (
        LessonServer(solution.create_app(settings, redis_url=redis_server.url), name="t13-a") as a,
        LessonServer(solution.create_app(settings, redis_url=redis_server.url), name="t13-b") as b,
    ):
        yield a, b


def body(chat_id: str, text: str) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message"}


def until_deltas(events: Iterator[httpx_sse.ServerSentEvent], count: int) -> list[Any]:
    got: list[Any] = []
    while sum(event.data.startswith('{"type":"text-delta"') for event in got) < count:
        got.append(next(events))
    return got


def chunks(events: list[httpx_sse.ServerSentEvent]) -> list[ui.Chunk]:
    assert events[-1].data == ui.DONE
    return [json.loads(event.data) for event in events[:-1]]


def wait_for(condition: Any) -> bool:
    deadline = time.monotonic() + BOUND
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_resume_and_stop_on_another_worker(
    two_workers: tuple[LessonServer, LessonServer], fake_llm: LessonServer
) -> None:
    a, b = two_workers
    stats: StreamStats = fake_llm.app.state.streams  # type: ignore[union-attr]
    assert wait_for(lambda: stats.open == 0)
    cancelled = stats.cancelled
    with httpx.Client(timeout=10) as http:
        with httpx_sse.connect_sse(
            http, "POST", f"{a.url}/api/chat", json=body("w1", "count forever")
        ) as source:
            first = until_deltas(source.iter_sse(), 3)  # then the connection drops
        # A second answer for the chat is refused on the other worker too.
        refused = http.post(f"{b.url}/api/chat", json=body("w1", "hello"))
        assert refused.status_code == 409, refused.text
        with httpx_sse.connect_sse(http, "GET", f"{b.url}/api/chat/w1/stream") as source:
            assert source.response.status_code == 200
            assert source.response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            events = source.iter_sse()
            again = until_deltas(events, 6)
            assert [e.data for e in again[: len(first)]] == [e.data for e in first]
            assert [e.id for e in again[: len(first)]] == [e.id for e in first]
            assert http.post(f"{b.url}/api/chat/w1/stop").json() == {"stopped": True}
            rest = list(events)
        answer = chunks(again + rest)
        assert answer[-2:] == [ui.text_end("text-1"), ui.abort(STOPPED)]
        assert ui.assemble(answer).text.startswith("1, 2, 3, 4, 5, 6,")
        assert wait_for(lambda: stats.cancelled == cancelled + 1), "worker A's upstream still runs"
        # B's reader got the end: the answer is forgotten everywhere.
        assert http.get(f"{a.url}/api/chat/w1/stream").status_code == 204
        assert http.post(f"{a.url}/api/chat/w1/stop").json() == {"stopped": False}
        # The chat takes a new message, on either worker.
        with httpx_sse.connect_sse(
            http, "POST", f"{b.url}/api/chat", json=body("w1", "count to 2")
        ) as source:
            assert ui.assemble(chunks(list(source.iter_sse()))).text == "1, 2."


def test_last_event_id_resumes_on_another_worker(
    two_workers: tuple[LessonServer, LessonServer],
) -> None:
    a, b = two_workers
    with httpx.Client(timeout=10) as http:
        with httpx_sse.connect_sse(
            http, "POST", f"{a.url}/api/chat", json=body("w2", "count to 5")
        ) as source:
            events = source.iter_sse()
            seen = [next(events) for _ in range(3)]
        headers = {"Last-Event-ID": seen[-1].id}
        with httpx_sse.connect_sse(
            http, "GET", f"{b.url}/api/chat/w2/stream", headers=headers
        ) as source:
            rest = chunks(list(source.iter_sse()))
        assert rest[0] == ui.text_delta("text-1", " 2,")
        assert ui.assemble([json.loads(e.data) for e in seen] + rest).text == "1, 2, 3, 4, 5."
        assert http.get(f"{b.url}/api/chat/w2/stream").status_code == 204


def test_a_worker_shutting_down_tells_the_readers_elsewhere(
    two_workers: tuple[LessonServer, LessonServer],
) -> None:
    a, b = two_workers
    with httpx.Client(timeout=10) as http:
        with httpx_sse.connect_sse(
            http, "POST", f"{a.url}/api/chat", json=body("w3", "count forever")
        ) as source:
            until_deltas(source.iter_sse(), 1)
        with httpx_sse.connect_sse(http, "GET", f"{b.url}/api/chat/w3/stream") as source:
            events = source.iter_sse()
            until_deltas(events, 2)
            a.stop()  # its lifespan ends the answers it generates
            rest = list(events)
    assert chunks(rest)[-2:] == [ui.text_end("text-1"), ui.error(SHUT_DOWN)]


def test_redis_down_is_a_503(redis_server: RedisServer, fake_llm: LessonServer) -> None:
    solution = load_exercise("13_capstone", "solutions")
    app = solution.create_app(llm_settings(fake_llm.url), redis_url=redis_server.url)
    with LessonServer(app, name="t13-down") as server, httpx.Client(timeout=10) as http:
        redis_server.stop(keep_data=True)
        try:
            response = http.post(f"{server.url}/api/chat", json=body("w4", "hello"))
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert "Try again" in response.json()["detail"]
            assert http.get(f"{server.url}/api/chat/w4/stream").status_code == 503
        finally:
            redis_server.start()


def test_a_busy_store_is_a_503_that_says_busy(
    redis_server: RedisServer, fake_llm: LessonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """StoreBusy (this process's own limit) is a 503 "busy", not "cannot reach its store"."""
    solution = load_exercise("13_capstone", "solutions")
    one_follower = functools.partial(RedisAnswerStore, max_followers=1)
    monkeypatch.setattr(solution, "RedisAnswerStore", one_follower)
    app = solution.create_app(llm_settings(fake_llm.url), redis_url=redis_server.url)
    with LessonServer(app, name="t13-busy") as server, httpx.Client(timeout=10) as http:
        with httpx_sse.connect_sse(
            http, "POST", f"{server.url}/api/chat", json=body("w5", "count forever")
        ) as source:
            until_deltas(source.iter_sse(), 1)
            # The one follower this process may run is taken: a second answer is refused.
            refused = http.post(f"{server.url}/api/chat", json=body("w6", "hello"))
            assert refused.status_code == 503, refused.text
            assert refused.json() == {"detail": "The chat service is busy. Try again in a moment."}
            assert refused.headers["retry-after"] == "5"
            assert http.post(f"{server.url}/api/chat/w5/stop").json() == {"stopped": True}


# -- the store on its own (one process, real Redis) ----------------------------------------------


class Source:
    """An answer's chunks, released by the test: start, text-start, then a delta per `put`."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = False

    def put(self, *deltas: str) -> None:
        for delta in deltas:
            self.queue.put_nowait(delta)

    def finish(self) -> None:
        self.queue.put_nowait(None)

    async def chunks(self) -> AsyncIterator[ui.Chunk]:
        try:
            yield ui.start(self.message_id)
            yield ui.text_start("text-1")
            while (delta := await self.queue.get()) is not None:
                yield ui.text_delta("text-1", delta)
            yield ui.text_end("text-1")
            yield ui.finish("stop")
        finally:
            self.closed = True


async def until(condition: Any, bound: float = BOUND) -> bool:
    """Poll `condition` (bounded): the verdict never depends on how fast the machine is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110 (state, not an event)
        await asyncio.sleep(0.01)
    return bool(condition())


async def collect(stream: AnswerStream | None) -> list[tuple[str, ui.Chunk]]:
    assert stream is not None
    return [(event_id, json.loads(data)) async for event_id, data in stream.chunks]


async def _scenario(url: str) -> dict[str, Any]:
    store = RedisAnswerStore(url, prefix="t13-unit", linger=0.2)
    redis = redis_client(url)
    seen: dict[str, Any] = {}
    try:
        seen["unknown replay"] = await store.replay("nobody")
        seen["unknown stop"] = await store.stop("nobody")

        async def short() -> Any:
            yield ui.start("m1")
            yield ui.finish("stop")

        await store.start("c1", "m1", short())
        answer = await store.replay("c1")
        assert answer is not None
        seen["chunks"] = [json.loads(data) async for _, data in answer.chunks]
        seen["kept"] = await store.replay("c1") is not None  # not delivered: kept for linger
        # An id this answer never reached (forged, or from another store): from the start.
        future = await store.replay("c1", "m1:99999999999999-0")
        seen["future id"] = [chunk for _, chunk in await collect(future)]
        await until(lambda: store.followers == 0)
        await asyncio.sleep(0.4)
        seen["after linger"] = await store.replay("c1")

        # A worker that died mid-answer: the claim expired, no end was ever written.
        await redis.set("t13-unit:c2:latest", "m2")
        await redis.xadd("t13-unit:c2:m2:chunks", {"begin": "1"})
        await redis.xadd("t13-unit:c2:m2:chunks", {"data": ui.encode(ui.start("m2"))})
        orphan = await store.replay("c2")
        assert orphan is not None
        seen["orphan"] = [json.loads(data) async for _, data in orphan.chunks]
    finally:
        await store.aclose()
        await redis.aclose()
    return seen


def test_store_unknown_linger_and_an_orphaned_answer(redis_server: RedisServer) -> None:
    seen = asyncio.run(asyncio.wait_for(_scenario(redis_server.url), 20))
    assert seen["unknown replay"] is None
    assert seen["unknown stop"] is False
    assert seen["chunks"] == [ui.start("m1"), ui.finish("stop")]
    assert seen["kept"] is True
    assert seen["future id"] == [ui.start("m1"), ui.finish("stop")]
    assert seen["after linger"] is None
    assert seen["orphan"] == [ui.start("m2"), ui.error(INTERRUPTED)]


async def _many_local_readers(url: str) -> dict[str, Any]:
    # window=8: the follower keeps 8 to 10 entries; a reader that stops reading falls out.
    store = RedisAnswerStore(url, prefix="t13-fan", window=8)
    source = Source("m1")
    seen: dict[str, Any] = {}
    try:
        await store.start("c1", "m1", source.chunks())
        follower = store._followers["t13-fan:c1:m1:chunks"]
        source.put("1,", " 2,")
        streams = [await store.replay("c1") for _ in range(50)]
        tasks = [asyncio.create_task(collect(stream)) for stream in streams]
        slow_stream = await store.replay("c1")
        assert slow_stream is not None
        slow = slow_stream.chunks
        got = [await anext(slow) for _ in range(4)]  # start, text-start, "1,", " 2,"
        fifth = asyncio.create_task(anext(slow))  # waits on the follower: it is live
        seen["one follower"] = await until(lambda: follower.readers == 51)
        source.put(" 3,")
        got.append(await fifth)
        # A reader resuming after "1," while the answer runs.
        late = asyncio.create_task(collect(await store.replay("c1", got[2][0])))
        source.put(*[f" {n}," for n in range(4, 60)])
        behind = (int(got[-1][0].split(":")[1].split("-")[0]), 0)
        seen["left behind"] = await until(lambda: follower.floor > behind)
        source.finish()
        got += [item async for item in slow]  # catches up from Redis, then the window
        seen["slow"] = [(event_id, json.loads(data)) for event_id, data in got]
        seen["results"] = await asyncio.gather(*tasks)
        seen["late"] = await late
        seen["resumed from"] = got[2][0]
        seen["followers"] = store.followers
    finally:
        await store.aclose()
    return seen


async def collect_some(stream: AnswerStream | None, count: int) -> list[tuple[str, ui.Chunk]]:
    assert stream is not None
    got: list[tuple[str, ui.Chunk]] = []
    async with contextlib.aclosing(stream.chunks) as chunks:  # type: ignore[type-var]
        async for event_id, data in chunks:
            got.append((event_id, json.loads(data)))
            if len(got) == count:
                break
    return got


def test_local_readers_share_one_follower_and_a_slow_one_catches_up_from_redis(
    redis_server: RedisServer,
) -> None:
    seen = asyncio.run(asyncio.wait_for(_many_local_readers(redis_server.url), 30))
    assert seen["one follower"], "51 readers of one answer should share one follower"
    assert seen["left behind"], "the scenario needs the slow reader behind the window"
    reference = seen["results"][0]
    text = "".join(["1,", " 2,", *[f" {n}," for n in range(3, 60)]])
    assert ui.assemble(c for _, c in reference).text == text
    assert reference[-1][1] == ui.finish("stop")
    ids = [event_id for event_id, _ in reference]
    assert len(set(ids)) == len(ids), "a reader got an entry twice"
    for result in seen["results"]:  # no gap, no duplicate, for every reader
        assert result == reference
    assert seen["slow"] == reference, "a reader behind the window lost or repeated chunks"
    assert seen["late"] == reference[ids.index(seen["resumed from"]) + 1 :]


async def _trimmed(url: str) -> dict[str, Any]:
    store = RedisAnswerStore(url, prefix="t13-trim")
    other = RedisAnswerStore(url, prefix="t13-trim")  # another worker: no follower of it yet
    bounded = RedisAnswerStore(url, prefix="t13-trim-max", max_entries=5)
    redis = redis_client(url)
    source, second = Source("m1"), Source("m2")
    seen: dict[str, Any] = {}
    try:
        await store.start("c1", "m1", source.chunks())
        source.put(*[f" {n}," for n in range(1, 11)])
        first = await collect_some(await store.replay("c1"), 12)  # start, text-start, 10 deltas
        early, newest = first[3][0], first[-1][0]
        # An operator (or MAXLEN) trims the answer to its 4 newest entries.
        await redis.xtrim("t13-trim:c1:m1:chunks", maxlen=4, approximate=False)
        seen["from the start"] = await collect(await other.replay("c1"))
        seen["after an early id"] = await collect(await other.replay("c1", early))
        newest_reader = asyncio.create_task(collect(await other.replay("c1", newest)))
        source.put(" 11,")
        source.finish()
        seen["after the newest id"] = await newest_reader
        seen["early id"] = early

        # max_entries: the store trims its own streams (exactly).
        await bounded.start("c2", "m2", second.chunks())
        second.put(*[f" {n}," for n in range(1, 11)])
        second.finish()
        await until(lambda: bounded.followers == 0)
        seen["bounded"] = await collect(await bounded.replay("c2"))
    finally:
        for each in (store, other, bounded):
            await each.aclose()
        await redis.aclose()
    return seen


def test_a_reader_resuming_into_trimmed_history_gets_an_error_chunk(
    redis_server: RedisServer,
) -> None:
    seen = asyncio.run(asyncio.wait_for(_trimmed(redis_server.url), 30))
    assert [chunk for _, chunk in seen["from the start"]] == [ui.error(TRIMMED)]
    assert seen["after an early id"] == [(seen["early id"], ui.error(TRIMMED))]
    # Nothing after the newest id was trimmed: that reader gets the rest, complete.
    assert [chunk for _, chunk in seen["after the newest id"]] == [
        ui.text_delta("text-1", " 11,"),
        ui.text_end("text-1"),
        ui.finish("stop"),
    ]
    assert [chunk for _, chunk in seen["bounded"]] == [ui.error(TRIMMED)]


async def _limits(url: str) -> dict[str, Any]:
    store = RedisAnswerStore(url, prefix="t13-limit", max_followers=1)
    elsewhere = RedisAnswerStore(url, prefix="t13-limit")  # another worker process
    running, refused, foreign = Source("m1"), Source("m2"), Source("m3")
    seen: dict[str, Any] = {}
    try:
        await store.start("c1", "m1", running.chunks())
        reader = asyncio.create_task(collect(await store.replay("c1")))
        refused_chunks = refused.chunks()
        with pytest.raises(StoreBusy) as busy:
            await store.start("c2", "m2", refused_chunks)
        seen["start refused"] = str(busy.value)
        seen["refused source closed"] = refused_chunks.ag_frame is None  # type: ignore[attr-defined]
        await elsewhere.start("c3", "m3", foreign.chunks())  # generated by the other worker
        with pytest.raises(StoreBusy) as busy:
            await store.replay("c3")  # this process cannot follow a second answer
        seen["reader refused"] = str(busy.value)
        running.put("1,", " 2.")
        running.finish()
        seen["running answer"] = await reader
        foreign.finish()

        # The pool itself: a limit that is named when it is reached.
        pool = redis_client(url, max_connections=2, wait=0.2, name="t13-pool")
        holders = [asyncio.create_task(pool.blpop(["t13-limit:never"], timeout=5)) for _ in "ab"]
        in_use = pool.connection_pool._in_use_connections  # type: ignore[attr-defined]
        await until(lambda: len(in_use) == 2)
        with pytest.raises(PoolExhausted) as full:
            await pool.get("t13-limit:anything")
        seen["pool"] = str(full.value)
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        await pool.aclose()
    finally:
        await store.aclose()
        await elsewhere.aclose()
    return seen


def test_running_out_of_followers_or_connections_is_named_and_harms_no_answer(
    redis_server: RedisServer,
) -> None:
    seen = asyncio.run(asyncio.wait_for(_limits(redis_server.url), 30))
    for refusal in (seen["start refused"], seen["reader refused"]):
        assert "max_followers=1" in refusal
        assert "unreachable" not in refusal
    assert seen["refused source closed"] is True  # its upstream request is not left open
    assert ui.assemble(c for _, c in seen["running answer"]).text == "1, 2."
    assert seen["pool"] == (
        "all 2 connections of the Redis pool 't13-pool' are in use"
        " (max_connections=2, waited 0.2 s for one)"
    )


# -- real worker processes, 200 concurrent readers ------------------------------------------------

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"
READERS = 200
MAX_CONNECTIONS = 10  # per process, for one answer with 200 readers (issue 20's target)


def chat_process(redis_url: str, name: str) -> WorkerProcesses:
    """The solution's app as one real uvicorn process on Redis; its fake model at pace 5
    (a token every 250 ms): an answer runs while 200 readers join it, at a rate a
    loaded machine keeps up with."""
    env = {
        "PYTHONPATH": str(SOLUTIONS),
        "REDIS_URL": redis_url,
        "COURSE_PACE": "5",
        "OPENAI_BASE_URL": "",  # the app starts the course's fake model itself
    }
    return start_workers("13_capstone:app", name=name, workers=1, env=env)


class Reader:
    """One SSE reader: its status, its (id, data) events, whether it is live yet."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.url = url
        self.last_event_id = last_event_id
        self.status: int | None = None
        self.events: list[tuple[str, str]] = []
        self.live = False  # a text-delta arrived
        self.finished = False
        self.refusal = ""

    async def run(self, http: httpx.AsyncClient) -> None:
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        try:
            async with httpx_sse.aconnect_sse(http, "GET", self.url, headers=headers) as source:
                self.status = source.response.status_code
                if self.status != 200:
                    self.refusal = (await source.response.aread()).decode(errors="replace")
                    return
                async for event in source.aiter_sse():
                    if not event.data:  # a ping comment: httpx_sse makes it an empty event
                        continue
                    self.events.append((event.id, event.data))
                    self.live = self.live or event.data.startswith('{"type":"text-delta"')
        finally:
            self.finished = True


def client_connections(redis_url: str) -> list[dict[str, Any]]:
    """CLIENT LIST, without the connection asking."""
    import redis as sync_redis

    with sync_redis.Redis.from_url(redis_url, decode_responses=True) as admin:
        me = admin.client_id()
        return [client for client in admin.client_list() if int(client["id"]) != me]


async def _readers_scenario(
    redis_url: str, poster: str, places: list[str], stopper: str, chat_id: str
) -> dict[str, Any]:
    """POST on `poster`, READERS readers spread over `places` (half of them resuming), Stop
    on `stopper`; what each reader got, and Redis's clients while all of them were live."""
    limits = httpx.Limits(max_connections=READERS + 20, max_keepalive_connections=20)
    timeout = httpx.Timeout(60.0, connect=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        first: list[tuple[str, str]] = []
        request = body(chat_id, "count forever")
        async with httpx_sse.aconnect_sse(
            http, "POST", f"{poster}/api/chat", json=request
        ) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for event in source.aiter_sse():  # then the poster's connection drops
                first.append((event.id, event.data))
                if sum(data.startswith('{"type":"text-delta"') for _, data in first) == 3:
                    break
        resume_after = first[3][0]  # the first text-delta's id
        readers = [
            Reader(
                f"{places[n % len(places)]}/api/chat/{chat_id}/stream",
                resume_after if n % 2 else None,
            )
            for n in range(READERS)
        ]
        tasks = [asyncio.create_task(reader.run(http)) for reader in readers]
        all_in = await until(lambda: all(r.live or r.finished for r in readers), bound=120)
        clients = await asyncio.to_thread(client_connections, redis_url)
        try:
            stop = (await http.post(f"{stopper}/api/chat/{chat_id}/stop")).json()
        except httpx.HTTPError as exc:
            stop = f"{type(exc).__name__}: {exc}"
        # Bounded, and no exception: the assertions say what went wrong.
        _, pending = await asyncio.wait(tasks, timeout=120)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "first": first,
        "resume after": resume_after,
        "readers": readers,
        "all in": all_in,
        "clients": clients,
        "stop": stop,
        "unfinished": len(pending),
    }


def check_every_reader(seen: dict[str, Any]) -> None:
    readers: list[Reader] = seen["readers"]
    refused = [f"{r.status} {r.refusal}" for r in readers if r.status != 200]
    assert not refused, f"{len(refused)} of {READERS} readers were refused: {refused[:3]}"
    assert seen["all in"], "not every reader received a text-delta within the bound"
    assert seen["stop"] == {"stopped": True}
    assert seen["unfinished"] == 0, f"{seen['unfinished']} readers got no end after the Stop"
    full = [r for r in readers if r.last_event_id is None]
    reference = full[0].events
    assert reference[-1][1] == ui.DONE
    chunks = [json.loads(data) for _, data in reference[:-1]]
    assert chunks[-2:] == [ui.text_end("text-1"), ui.abort(STOPPED)]
    text = ui.assemble(chunks).text
    count = text.count(",")
    assert text == "".join(f"{' ' if n > 1 else ''}{n}," for n in range(1, count + 1))
    assert reference[: len(seen["first"])] == seen["first"], "ids differ between readers"
    for reader in full:
        assert reader.events == reference, "a reader from the start did not get the answer"
    ids = [event_id for event_id, _ in reference]
    rest = reference[ids.index(seen["resume after"]) + 1 :]
    for reader in readers:
        if reader.last_event_id is not None:
            assert reader.events == rest, "a resuming reader got a gap or a duplicate"


def connections_by_process(clients: list[dict[str, Any]]) -> dict[str, int]:
    """Redis connections per process, by the pid in their CLIENT SETNAME name ("?" if none)."""
    counts: dict[str, int] = {}
    for client in clients:
        name = client.get("name") or ""
        pid = name.rsplit("-", 1)[-1] if name.rsplit("-", 1)[-1].isdigit() else "?"
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def test_200_readers_of_one_answer_share_a_few_redis_connections(
    redis_server: RedisServer,
) -> None:
    """One process, 200 readers of one answer: a few Redis connections, not one per reader.

    A design with one blocking XREAD per reader needs 200 connections (redis-py's pool
    stops at 100, and the rest are refused): this test fails for it.
    """
    with chat_process(redis_server.url, "t13-one") as one:
        seen = asyncio.run(
            _readers_scenario(redis_server.url, one.url, [one.url], one.url, "many1")
        )
    clients = seen["clients"]
    refused = sum(reader.status != 200 for reader in seen["readers"])
    assert len(clients) <= MAX_CONNECTIONS, (
        f"{len(clients)} Redis connections for one answer with {READERS} readers in one"
        f" process ({refused} readers refused; at most {MAX_CONNECTIONS} connections"
        " expected): one per reader? Follow the answer once per process and fan it out"
        " to the readers in memory (lesson 09)."
    )
    check_every_reader(seen)


def test_resume_and_stop_across_two_worker_processes_under_200_readers(
    redis_server: RedisServer,
) -> None:
    """Two real processes: the answer starts on A, 200 readers (half resuming after an id)
    spread over A and B, Stop on B; every reader gets the whole answer, ended by the abort."""
    with (
        chat_process(redis_server.url, "t13-pa") as a,
        chat_process(redis_server.url, "t13-pb") as b,
    ):
        seen = asyncio.run(
            _readers_scenario(redis_server.url, a.url, [a.url, b.url], b.url, "many2")
        )
        pids = {str(pid) for pid in a.worker_pids + b.worker_pids}
    check_every_reader(seen)
    per_process = connections_by_process(seen["clients"])
    assert set(per_process) == pids, per_process  # both processes follow the answer
    assert max(per_process.values()) <= MAX_CONNECTIONS, per_process
