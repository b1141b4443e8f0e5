"""Lesson 07: a job registry whose jobs outlive their watchers: start (202), watch with
resume, cancel, errors, a bound and a time-to-live.

The jobs under test run scripted work: each job's work does what the test tells it, step by
step, so no verdict depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing, contextmanager
from types import ModuleType
from typing import Any

import httpx
import httpx_sse
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from course_app.runtime import LessonServer

from task_helpers import server_said

SECRET = "/srv/uploads/user-1234/IMG_0007.jpg: truncated (db password=hunter2)"


class Script:
    """One job's work, told what to do by the test through a thread-safe queue."""

    def __init__(self) -> None:
        self.commands: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.cancelled = threading.Event()

    def report(self, *percents: float) -> None:
        for percent in percents:
            self.commands.put(("report", percent))

    def finish(self) -> None:
        self.commands.put(("finish", None))

    def fail(self, error: Exception) -> None:
        self.commands.put(("fail", error))


class ScriptedWork:
    """The `work` of the app under test. The job asked for N photos follows script(N)."""

    def __init__(self, exercise: ModuleType) -> None:
        self.exercise = exercise
        self._scripts: dict[int, Script] = {}
        self._lock = threading.Lock()

    def script(self, photos: int) -> Script:
        with self._lock:
            return self._scripts.setdefault(photos, Script())

    async def __call__(self, request: Any, report: Callable[[Any], None]) -> Any:
        script = self.script(request.photos)
        try:
            while True:
                try:
                    command, value = script.commands.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.001)
                    continue
                if command == "report":
                    report(self.state(value))
                elif command == "finish":
                    return self.state(100, stage="done")
                else:
                    raise value
        except asyncio.CancelledError:
            script.cancelled.set()
            raise

    def state(self, percent: float, stage: str = "working") -> Any:
        return self.exercise.JobState(percent=percent, stage=stage, message=f"{percent} %")


class ManualClock:
    """A clock the test moves by hand: `clock.now += 60` is a minute later, at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def work(exercise: ModuleType) -> ScriptedWork:
    return ScriptedWork(exercise)


@contextmanager
def running(app: FastAPI, raise_server_exceptions: bool = True) -> Iterator[TestClient]:
    """A client for the app; the app's lifespan (and its event loop) runs until the end."""
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client


def start(client: TestClient, photos: int) -> tuple[str, str]:
    """POST /jobs; returns the job's id and its events URL."""
    response = client.post("/jobs", json={"photos": photos})
    assert response.status_code == 202, response.text
    return response.json()["id"], response.headers["location"]


def job_of(app: FastAPI, job_id: str) -> Any:
    return app.state.jobs.jobs[job_id]


def wait_until(predicate: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds:.0f} s: {what}")
        time.sleep(0.002)


def wait_for_events(app: FastAPI, job_id: str, count: int) -> None:
    wait_until(
        lambda: job_of(app, job_id).log.last_id >= count,
        f"the job should have logged {count} events (did report() publish them?)",
    )


def wait_until_ended(app: FastAPI, job_id: str) -> None:
    wait_until(
        lambda: job_of(app, job_id).log.closed,
        "the job should have ended and closed its log (else its watchers wait forever)",
    )


Received = tuple[str, str, dict[str, Any]]  # (id, event, data)


def read_all(source: httpx_sse.EventSource, limit: int | None = None) -> list[Received]:
    assert source.response.status_code == 200, source.response.read().decode()
    received = []
    for sse in source.iter_sse():
        received.append((sse.id, sse.event, json.loads(sse.data)))
        if limit is not None and len(received) >= limit:
            break
    return received


@contextmanager
def watching(
    client: TestClient, url: str, last_event_id: str | None = None
) -> Iterator[httpx_sse.EventSource]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with httpx_sse.connect_sse(client, "GET", url, headers=headers) as source:
        yield source


def watch(client: TestClient, url: str, last_event_id: str | None = None) -> list[Received]:
    with watching(client, url, last_event_id) as source:
        return read_all(source)


def ids_and_kinds(received: list[Received]) -> list[tuple[str, str]]:
    return [(event_id, kind) for event_id, kind, _ in received]


def on_a_loop(exercise: ModuleType, scenario: Callable[[Any], Any], **options: Any) -> Any:
    """Run `await scenario(registry)` on a fresh event loop, with a JobRegistry(**options)."""

    async def main() -> Any:
        registry = exercise.JobRegistry(**options)
        try:
            return await asyncio.wait_for(scenario(registry), 10)
        finally:
            await registry.aclose()

    return asyncio.run(main())


def logged(job: Any) -> list[tuple[int, str, dict[str, Any]]]:
    return [(item.id, item.event, json.loads(item.data)) for item in job.log.since(None)]


def test_evict_expired_forgets_jobs_ttl_seconds_after_they_ended(exercise: ModuleType) -> None:
    """evict_expired() forgets the jobs that ended ttl seconds ago or more, and only those

    Which attribute says that a job has ended, and when? Which clock do you read: the
    registry's own, or time.monotonic()? Is a job that ended exactly ttl seconds ago kept?
    """
    clock = ManualClock()
    registry = exercise.JobRegistry(ttl=60, clock=clock)
    for name, ended_ago in [("old", 60), ("older", 5000), ("recent", 59), ("running", None)]:
        job = exercise.Job(id=name)
        job.finished_at = None if ended_ago is None else clock.now - ended_ago
        registry.jobs[name] = job
    registry.evict_expired()
    assert sorted(registry.jobs) == ["recent", "running"]
    clock.now += 10_000
    assert registry.get("recent") is None, "get() looks jobs up after evicting the expired ones"
    assert sorted(registry.jobs) == ["running"], "a running job never expires"


def test_the_registry_runs_each_job_as_a_task(exercise: ModuleType) -> None:
    """start() returns at once; the job runs as a task, logs a progress event per report, then one done

    What does asyncio.create_task() give back, and where do you keep it? Which Job method
    logs an event? When the work returns, which event carries the state it returned?
    """

    async def scenario(registry: Any) -> Any:
        job = registry.start(exercise.JobRequest(photos=2))  # the real thumbnail work
        assert registry.jobs == {job.id: job}
        assert job.task is not None and not job.task.done(), "the job should run as a task"
        await job.task
        return job

    job = on_a_loop(exercise, scenario)
    assert [(item_id, kind) for item_id, kind, _ in logged(job)] == [
        (1, "progress"),
        (2, "progress"),
        (3, "progress"),
        (4, "done"),
    ]
    assert logged(job)[-1][2] == {
        "percent": 100,
        "stage": "done",
        "message": "2 thumbnails ready",
        "eta_seconds": None,
    }
    assert job.log.closed, "close the job's log at its end: its watchers are waiting on it"
    assert job.finished_at is not None, "a job that has ended needs its finished_at"


def test_a_failing_job_logs_one_safe_error_event(
    exercise: ModuleType, work: ScriptedWork, caplog: pytest.LogCaptureFixture
) -> None:
    """a job that fails ends with one error event with a safe message; the details go to the log

    Where does the error event's message come from, if not from the exception? Which
    logging call keeps the traceback for whoever fixes the bug? Should the task itself
    end with the exception?
    """
    work.script(5).report(40)
    work.script(5).fail(OSError(SECRET))

    async def scenario(registry: Any) -> Any:
        job = registry.start(exercise.JobRequest(photos=5))
        await asyncio.wait([job.task])
        return job

    with caplog.at_level(logging.INFO):
        job = on_a_loop(exercise, scenario, work=work)
    events = logged(job)
    assert events == [
        (
            1,
            "progress",
            {"percent": 40, "stage": "working", "message": "40 %", "eta_seconds": None},
        ),
        (
            2,
            "error",
            {"percent": 40, "stage": "failed", "message": exercise.FAILED, "eta_seconds": None},
        ),
    ]
    wire = json.dumps(events)
    for secret in ("hunter2", "/srv/uploads", "OSError", "Traceback"):
        assert secret not in wire, f"{secret!r} reached the client"
    assert "hunter2" in caplog.text, "log the exception (logger.exception) so it can be fixed"
    assert job.task.exception() is None, "the failure was reported: the task need not fail too"
    assert job.log.closed and job.finished_at is not None


def test_a_cancelled_job_logs_one_cancelled_event_and_ends_cancelled(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """a job whose task is cancelled logs one cancelled event, and its task ends cancelled

    What arrives in the job's coroutine when its task is cancelled? After you publish
    `cancelled`, why must you re-raise?
    """

    async def scenario(registry: Any) -> Any:
        job = registry.start(exercise.JobRequest(photos=5))
        work.script(5).report(25)
        async with aclosing(job.log.follow()) as events:
            await anext(events)  # the job has reported once
        job.task.cancel()
        await asyncio.wait([job.task])
        return job

    job = on_a_loop(exercise, scenario, work=work)
    assert logged(job)[-1] == (
        2,
        "cancelled",
        {"percent": 25, "stage": "cancelled", "message": exercise.CANCELLED, "eta_seconds": None},
    )
    assert work.script(5).cancelled.is_set(), "the job's work was never cancelled"
    assert job.task.cancelled(), "the task swallowed its cancellation: re-raise CancelledError"
    assert job.log.closed and job.finished_at is not None


def test_a_full_registry_forgets_the_job_that_ended_first(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """a full registry makes room by forgetting the job that ended first, else raises RegistryFull

    Which jobs may be forgotten to make room, and which never? Among those, which one goes?
    """

    async def scenario(registry: Any) -> list[str]:
        for name, finished_at in [("ended-late", 900.0), ("ended-first", 800.0), ("runs", None)]:
            job = exercise.Job(id=name)
            job.finished_at = finished_at
            registry.jobs[name] = job
        new = registry.start(exercise.JobRequest(photos=5))
        after_first = sorted(registry.jobs)
        registry.start(exercise.JobRequest(photos=6))  # forgets "ended-late"
        with pytest.raises(exercise.RegistryFull):
            registry.start(exercise.JobRequest(photos=7))  # all three places hold running jobs
        assert new.id in registry.jobs
        return after_first

    clock = ManualClock()  # now = 1000: both ended jobs are well within their ttl
    after_first = on_a_loop(exercise, scenario, work=work, max_jobs=3, ttl=600, clock=clock)
    assert "ended-first" not in after_first and len(after_first) == 3, after_first
    assert {"ended-late", "runs"} <= set(after_first)


def test_post_starts_a_job_and_answers_202_at_once(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """POST /jobs answers 202 Accepted at once, with the job's id and its events URL in Location

    Does your route wait for the job to finish, or only start it and answer? Which status
    says "accepted, not done yet", and which header tells the client where to go next?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        response = client.post("/jobs", json={"photos": 5})  # its work never ends by itself
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert re.fullmatch(r"[0-9a-f]{32}", job_id), f"not a uuid4().hex: {job_id!r}"
        assert response.json() == {"id": job_id, "events": f"/jobs/{job_id}/events"}
        assert response.headers["location"] == f"/jobs/{job_id}/events"
        task = job_of(app, job_id).task
        assert task is not None and not task.done(), "the job should run as a task of its own"
        other, _ = start(client, 6)
        assert other != job_id, "every job needs an id of its own"


def test_events_are_typed_states_ending_in_one_done(exercise: ModuleType) -> None:
    """a job's stream: progress events (JobState JSON, ids 1, 2, ...), then exactly one done

    Which Job method logs an event, and which event name does each report need? When the
    work returns, which event carries the state it returned? `Last-Event-ID: 0` asks for
    everything from the first event.
    """
    app = exercise.create_app()  # the real thumbnail work, 3 photos
    with running(app) as client:
        _, url = start(client, 3)
        received = watch(client, url, last_event_id="0")
    assert ids_and_kinds(received) == [
        ("1", "progress"),
        ("2", "progress"),
        ("3", "progress"),
        ("4", "progress"),
        ("5", "done"),
    ]
    for _, _, data in received:
        exercise.JobState.model_validate(data)  # every event is a whole JobState
    assert [data["percent"] for _, _, data in received] == [0, 33.3, 66.7, 100, 100]
    assert received[-1][2] == {
        "percent": 100,
        "stage": "done",
        "message": "3 thumbnails ready",
        "eta_seconds": None,
    }


def test_a_new_watcher_gets_the_current_state_then_live_events(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """a new watcher (no Last-Event-ID) gets the newest event, the job's current state, then live ones

    Which event holds the job's current state? After which id must the stream start so
    that it begins with that event, and what if the job has logged nothing yet?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, url = start(client, 5)
        work.script(5).report(10, 20, 30)
        wait_for_events(app, job_id, 3)
        with watching(client, url) as source:
            work.script(5).report(40)
            work.script(5).finish()
            received = read_all(source)
    assert ids_and_kinds(received) == [("3", "progress"), ("4", "progress"), ("5", "done")]
    assert [data["percent"] for _, _, data in received] == [30, 40, 100]


def test_last_event_id_resumes_with_only_the_missed_events(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """Last-Event-ID: 2 resumes with events 3, 4, 5, ... only: nothing twice, nothing lost

    Is the header's value the last event the client has, or the first one it wants?
    Which EventLog method replays the events after an id, then waits for new ones?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, url = start(client, 5)
        work.script(5).report(10, 20, 30, 40, 50)
        wait_for_events(app, job_id, 5)
        with watching(client, url, last_event_id="2") as source:
            work.script(5).finish()
            received = read_all(source)
    assert ids_and_kinds(received) == [
        ("3", "progress"),
        ("4", "progress"),
        ("5", "progress"),
        ("6", "done"),
    ]


def test_a_finished_job_replays_its_final_state_and_ends(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """a finished job's stream replays its final state (the terminal event) and ends

    Once the log is closed, what does following it give after the newest id, and after
    the last one? Does your stream end by itself when the log has ended?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, url = start(client, 5)
        work.script(5).report(50)
        work.script(5).finish()
        wait_until_ended(app, job_id)
        assert watch(client, url) == [
            (
                "2",
                "done",
                {"percent": 100, "stage": "done", "message": "100 %", "eta_seconds": None},
            )
        ]
        assert watch(client, url, last_event_id="1") == watch(client, url)
        assert watch(client, url, last_event_id="2") == [], "the client had everything already"


def test_a_watcher_that_leaves_does_not_stop_the_job(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """a watcher that leaves does not stop the job: it runs on to done

    Who runs the job: the request that watches it, or a task the registry owns? When a
    watcher's stream is cancelled, what else is cancelled with it?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, url = start(client, 5)
        work.script(5).report(10)
        with watching(client, url) as source:
            assert ids_and_kinds(read_all(source, limit=1)) == [("1", "progress")]
        # The watcher has gone; the job goes on.
        work.script(5).report(20)
        work.script(5).finish()
        wait_until_ended(app, job_id)
        job = job_of(app, job_id)
        assert [item.event for item in job.log.since(None)] == ["progress", "progress", "done"]
        assert not work.script(5).cancelled.is_set(), "the job was cancelled with its watcher"


def test_two_watchers_see_the_same_events(exercise: ModuleType, work: ScriptedWork) -> None:
    """two watchers of one job receive the same events, with the same ids

    Does each watcher follow the job's one log, or a copy of its own? Does one watcher's
    reading take anything away from the other?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, url = start(client, 5)
        work.script(5).report(10)
        wait_for_events(app, job_id, 1)
        with watching(client, url) as first, watching(client, url) as second:
            work.script(5).report(20, 30)
            work.script(5).finish()
            seen_first, seen_second = read_all(first), read_all(second)
    assert ids_and_kinds(seen_first) == [
        ("1", "progress"),
        ("2", "progress"),
        ("3", "progress"),
        ("4", "done"),
    ]
    assert seen_second == seen_first


def test_delete_cancels_a_running_job(exercise: ModuleType, work: ScriptedWork) -> None:
    """DELETE /jobs/{id} cancels the task for real; watchers get one cancelled event, then the end

    Which Task method asks a task to stop, and what arrives in its coroutine? After you
    publish `cancelled`, why re-raise? How does the route know the task has ended before
    it answers?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, url = start(client, 5)
        work.script(5).report(25)
        wait_for_events(app, job_id, 1)
        with watching(client, url, last_event_id="1") as source:
            response = client.delete(f"/jobs/{job_id}")
            received = read_all(source)
        cancelled = {
            "percent": 25,
            "stage": "cancelled",
            "message": exercise.CANCELLED,
            "eta_seconds": None,
        }
        assert response.status_code == 200, response.text
        assert response.json() == cancelled
        assert received == [("2", "cancelled", cancelled)]
        assert work.script(5).cancelled.is_set(), "the job's work was never cancelled"
        task = job_of(app, job_id).task
        assert task.cancelled(), "the task swallowed its cancellation: re-raise CancelledError"


def test_cancelling_an_ended_job_is_409(exercise: ModuleType, work: ScriptedWork) -> None:
    """cancelling a job that has already ended is a 409 Conflict, and changes nothing

    How can the route tell that a job has ended? What would a second terminal event do to
    the rule that every stream ends with exactly one?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        finished, _ = start(client, 5)
        work.script(5).finish()
        wait_until_ended(app, finished)
        assert client.delete(f"/jobs/{finished}").status_code == 409
        cancelled, _ = start(client, 6)
        assert client.delete(f"/jobs/{cancelled}").status_code == 200
        assert client.delete(f"/jobs/{cancelled}").status_code == 409
        for job_id, last in [(finished, "done"), (cancelled, "cancelled")]:
            kinds = [item.event for item in job_of(app, job_id).log.since(None)]
            assert kinds[-1] == last and kinds.count(last) == 1, kinds


def test_an_unknown_job_is_a_404_before_any_stream(
    exercise: ModuleType, work: ScriptedWork
) -> None:
    """an unknown job is a 404 (JSON, not an event stream), to watch it and to cancel it

    The lookup happens in a dependency, before any stream starts: which registry method
    runs first on every lookup, and what must it leave alone?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        watched = client.get("/jobs/0123456789abcdef0123456789abcdef/events")
        assert (watched.status_code, watched.headers["content-type"]) == (404, "application/json")
        assert client.delete("/jobs/no-such-job").status_code == 404


# Sent as bytes over a real socket: a header value is bytes, and any client can send any of
# these. Not through TestClient: it re-encodes a non-ASCII value (b"\xb2" would reach the
# app as "Â²"), so only a real server shows what the app really gets. b"\xb2" is "²" to the
# app: str.isdigit() says yes, int() says no. b"\xbd" ("½") does the same to isnumeric().
BAD_IDS = [b"abc", b"-1", b"1.5", b"4", b"99999999999999999999", b"\xb2", b"\xb9", b"\xbd"]


def test_a_bad_last_event_id_is_a_400(exercise: ModuleType, work: ScriptedWork) -> None:
    """a Last-Event-ID that is not the id of one of the job's events is a 400, never a 500 (real socket)

    Which values can int() not parse, although a str method such as isdigit() accepts
    them (try "²".isdigit() and int("²"))? Which can it parse, yet name no event of this
    job (negative, beyond the newest id)? Why must this be checked in the dependency,
    before the stream starts?
    """
    app = exercise.create_app(work=work)
    with (
        LessonServer(app, name="t07", grace=0.5) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        response = client.post("/jobs", json={"photos": 5})
        assert response.status_code == 202, f"POST /jobs: {response.text}{server_said(server)}"
        job_id, url = response.json()["id"], response.headers["location"]
        work.script(5).report(10, 20)
        work.script(5).finish()  # events 1, 2, 3: a stream, if one starts, ends
        wait_until_ended(app, job_id)
        for header in BAD_IDS:
            answer = client.get(url, headers={"Last-Event-ID": header})
            got = (answer.status_code, answer.headers["content-type"])
            sent = f"Last-Event-ID: {header!r} (the app reads {header.decode('latin-1')!r})"
            assert got == (400, "application/json"), f"{sent}{server_said(server)}"


def test_an_empty_last_event_id_means_none(exercise: ModuleType, work: ScriptedWork) -> None:
    """an empty Last-Event-ID is treated like no header at all: the job's current state

    Browsers never send an empty one, but other clients may: which test treats "" and a
    missing header alike?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, url = start(client, 5)
        work.script(5).report(10, 20)
        work.script(5).finish()
        wait_until_ended(app, job_id)
        assert ids_and_kinds(watch(client, url, last_event_id="")) == [("3", "done")]


def test_the_registry_is_bounded(exercise: ModuleType, work: ScriptedWork) -> None:
    """POST /jobs while every place holds a running job is a 503 with Retry-After; an ended job makes room

    Which exception does start() raise when no job can be forgotten, and which status tells
    a client "busy, try again later"? Which header says when?
    """
    app = exercise.create_app(work=work, max_jobs=2)
    with running(app) as client:
        first, _ = start(client, 1)
        second, _ = start(client, 2)
        refused = client.post("/jobs", json={"photos": 3})  # both others still run
        assert refused.status_code == 503, refused.text
        assert "retry-after" in refused.headers
        work.script(1).finish()
        wait_until_ended(app, first)
        third, _ = start(client, 3)  # the first job, ended, makes room
        assert set(app.state.jobs.jobs) == {second, third}
        assert client.get(f"/jobs/{first}/events").status_code == 404


def test_finished_jobs_expire_after_their_ttl(exercise: ModuleType, work: ScriptedWork) -> None:
    """a finished job is kept ttl seconds after it ended, then forgotten (404); running jobs stay

    From which moment does the time-to-live count: the job's start, or its end? Which clock
    do you read: time.monotonic(), or the one the registry was given?
    """
    clock = ManualClock()
    app = exercise.create_app(work=work, ttl=60, clock=clock)
    with running(app) as client:
        ended, url = start(client, 1)
        still_running, _ = start(client, 2)
        clock.now += 100  # the first job runs for 100 s, then ends
        work.script(1).finish()
        wait_until_ended(app, ended)
        clock.now += 59
        assert ids_and_kinds(watch(client, url)) == [("1", "done")], "kept for 60 s after its end"
        clock.now += 1
        assert client.get(url).status_code == 404, "forgotten 60 s after its end"
        clock.now += 10_000
        assert app.state.jobs.get(still_running) is not None, "a running job must never expire"


def test_shutdown_cancels_the_running_jobs(exercise: ModuleType, work: ScriptedWork) -> None:
    """when the app shuts down, each running job is cancelled and logs its cancelled event

    aclose() is given: the app calls it at the server's shutdown signal (or at the
    lifespan's end) and it cancels every running task. What does your _run() publish when
    that happens, and does it let the cancellation through?
    """
    app = exercise.create_app(work=work)
    with running(app) as client:
        job_id, _ = start(client, 5)
        work.script(5).report(60)
        wait_for_events(app, job_id, 1)
    job = job_of(app, job_id)
    assert [item.event for item in job.log.since(None)] == ["progress", "cancelled"]
    assert job.log.closed and job.task.cancelled()
