"""Lesson 07: long jobs that outlive their watchers.

`POST /jobs` starts a job (making thumbnails of some photos) and answers `202 Accepted` at
once, with the job's id and a `Location` to watch. `GET /jobs/{id}/events` streams the
job's progress as typed events, ending in exactly one `done`, `error` or `cancelled`;
`DELETE /jobs/{id}` cancels it. Every event carries the job's whole state (`JobState`), so
one event is enough to draw a progress bar: a new watcher gets the newest event, then the
live ones; a watcher that reconnects with `Last-Event-ID` gets only what it missed.

The jobs live in a `JobRegistry`, apart from any connection: a watcher can leave and
another arrive while the job runs on. The registry is bounded (`max_jobs`), forgets a
finished job `ttl` seconds after it ended, and cancels what is still running as soon as the
server begins to shut down (SIGTERM, Ctrl+C): each watcher then gets its `cancelled` and its
stream ends, so uvicorn has no stream left to wait for. (uvicorn runs the lifespan's
shutdown only after the open connections have closed: too late to tell the watchers.)

Check your work: `course check 07` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 07`, open http://127.0.0.1:8000/ (start a job, reload the
page mid-job), or `curl -i -X POST http://127.0.0.1:8000/jobs -H 'content-type:
application/json' -d '{"photos": 20}'` and then `curl -N http://127.0.0.1:8000/jobs/<id>/events`.
"""

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Response
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from course_app.runtime import html_page, pace
from course_app.streams import EventLog, QuietDisconnectRoute, close_at_shutdown, guard_requests

logger = logging.getLogger("lesson.jobs")

STEP_SECONDS = 0.3  # one thumbnail, scaled by the pace
MAX_PHOTOS = 200
EVENT_ID = re.compile(r"[0-9]{1,18}")  # not str.isdigit(): it accepts "²", which int() rejects
CANCELLED = "Cancelled."
FAILED = "The job failed. Nothing was saved; you can start it again."  # safe to show anyone


class JobState(BaseModel):
    """What every event of a job says: its whole state, so any one event can draw the bar."""

    percent: Annotated[float, Field(ge=0, le=100)]
    stage: str
    message: str
    eta_seconds: float | None = None  # None while it cannot be known

    def ended(self, stage: str, message: str) -> "JobState":
        """This state, stopped where it was: the same percent, no ETA."""
        return self.model_copy(update={"stage": stage, "message": message, "eta_seconds": None})


class JobRequest(BaseModel):
    photos: Annotated[int, Field(ge=1, le=MAX_PHOTOS)] = 20
    fail_at: Annotated[int | None, Field(ge=0)] = None  # simulate a broken photo


class JobAccepted(BaseModel):
    id: str
    events: str  # where to watch it (also the Location header)


Report = Callable[[JobState], None]
Work = Callable[[JobRequest, Report], Awaitable[JobState]]


async def make_thumbnails(request: JobRequest, report: Report) -> JobState:
    """The work: one paced step per photo, reporting after each; returns the final state."""
    total = request.photos
    started = time.monotonic()
    report(JobState(percent=0, stage="starting", message=f"0 of {total} photos"))
    for number in range(1, total + 1):
        if number - 1 == request.fail_at:
            # The kind of message that must never reach a client: paths, internals.
            raise OSError(f"/srv/uploads/user-1234/IMG_{number:04}.jpg: truncated JPEG data")
        await pace.sleep(STEP_SECONDS)
        per_photo = (time.monotonic() - started) / number
        report(
            JobState(
                percent=round(100 * number / total, 1),
                stage="resizing",
                message=f"{number} of {total} photos",
                eta_seconds=round(per_photo * (total - number), 1),
            )
        )
    return JobState(percent=100, stage="done", message=f"{total} thumbnails ready")


# Room for every event of the biggest job (a start, one per photo, an end): a watcher can
# always resume, EventsLost cannot happen.
MAX_EVENTS = MAX_PHOTOS + 2


@dataclass
class Job:
    id: str
    log: EventLog = field(default_factory=lambda: EventLog(maxlen=MAX_EVENTS))
    state: JobState = field(
        default_factory=lambda: JobState(percent=0, stage="queued", message="waiting to start")
    )
    task: "asyncio.Task[None] | None" = None
    finished_at: float | None = None  # the registry's clock() when the job ended

    def publish(self, event: str, state: JobState) -> None:
        """Log one event: the job's whole state, as JSON (Pydantic: never an f-string)."""
        self.state = state
        self.log.append(event, state.model_dump_json())

    @property
    def finished(self) -> bool:
        return self.log.closed


class RegistryFull(Exception):
    """Every place in the registry holds a running job."""


class JobRegistry:
    """The app's jobs, by id: at most `max_jobs`; a finished one is kept `ttl` seconds."""

    def __init__(
        self,
        *,
        work: Work = make_thumbnails,
        max_jobs: int = 100,
        ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.work = work
        self.max_jobs = max_jobs
        self.ttl = ttl
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.closed = False  # set by aclose(): the server is shutting down

    def get(self, job_id: str) -> Job | None:
        self.evict_expired()
        return self.jobs.get(job_id)

    def evict_expired(self) -> None:
        """Forget the jobs that finished `ttl` seconds ago or more."""
        # TODO: a job has finished when its `finished_at` is set. Drop every job whose
        #       finished_at is at least `ttl` seconds before self.clock(). Running jobs
        #       stay, however old they are.
        raise NotImplementedError("TODO: write evict_expired()")

    def start(self, request: JobRequest) -> Job:
        """Register a new job and start running it; RegistryFull if there is no room."""
        if self.closed:
            raise RegistryFull("the server is shutting down")
        # TODO: evict the expired jobs first. Still `max_jobs` jobs? Make room by dropping
        #       the finished job that ended first; if none has finished, raise RegistryFull.
        # TODO: make a Job with a fresh, unguessable id (uuid.uuid4().hex), run
        #       self._run(job, request) as an asyncio task (keep it in job.task: the event
        #       loop keeps only a weak reference to a task), register the job and return it.
        raise NotImplementedError("TODO: write start()")

    async def _run(self, job: Job, request: JobRequest) -> None:
        """Run the work; its progress and exactly one terminal event go to the job's log."""
        # TODO: await self.work(request, report), where report(state) publishes a
        #       "progress" event on the job; then publish "done" with the state it returns.
        # TODO: cancelled (CancelledError): publish "cancelled", the job's state .ended()
        #       with stage "cancelled" and the message CANCELLED, and re-raise.
        # TODO: any other exception: log it with logger.exception() (the details stay in
        #       the server's log) and publish "error", the state .ended() with stage
        #       "failed" and the message FAILED. Nothing of the exception goes to clients.
        # TODO: however it ends: set job.finished_at = self.clock() and close the job's log
        #       (its watchers then end their streams).
        raise NotImplementedError("TODO: write _run()")

    async def aclose(self) -> None:
        """Refuse new jobs, cancel the running ones and wait for them (at shutdown)."""
        self.closed = True
        running = [job.task for job in self.jobs.values() if job.task and not job.task.done()]
        if running:
            logger.info("shutting down: cancelling %d running job(s)", len(running))
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def create_app(
    *,
    work: Work = make_thumbnails,
    max_jobs: int = 100,
    ttl: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    registry = JobRegistry(work=work, max_jobs=max_jobs, ttl=ttl, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # At the shutdown signal, not after the lifespan: uvicorn first waits for the open
        # streams, and a watcher's stream ends only once its job has ended.
        async with close_at_shutdown(registry.aclose):
            yield

    app = FastAPI(title="Lesson 07: progress reporting for long jobs", lifespan=lifespan)
    guard_requests(app)  # a body too large, or not JSON, is a 413/422, never a 500
    # A watcher that leaves is not an error: without this, FastAPI 0.163 can log a
    # BrokenResourceError traceback for it (lesson 08's "When a client leaves" says why).
    app.router.route_class = QuietDisconnectRoute
    app.state.jobs = registry

    def find_job(job_id: str) -> Job:
        """A dependency: it runs before the route, so an unknown job is a real 404."""
        job = registry.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job (or it ended too long ago)")
        return job

    FoundJob = Annotated[Job, Depends(find_job)]

    def resume_after(job: FoundJob, last_event_id: Annotated[str | None, Header()] = None) -> int:
        """The id after which a watcher's stream starts (a dependency too: 400, not a stream)."""
        # TODO: no Last-Event-ID (or an empty one): a new watcher. It needs only the job's
        #       current state, which the newest event holds: start after the event before
        #       it (never below 0).
        # TODO: otherwise it must be the id of one of this job's events: digits (EVENT_ID)
        #       and at most the log's last_id. Anything else is an HTTPException(400):
        #       never a 500, and never a stream that waits for ids that will not come.
        raise NotImplementedError("TODO: write resume_after()")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return html_page("07_progress.html")

    @app.post("/jobs", status_code=202)
    async def start_job(body: JobRequest, response: Response) -> JobAccepted:
        # TODO: start the job in the registry; RegistryFull is a 503 (with a Retry-After
        #       header) rather than a 500.
        # TODO: answer with the job's id and its events URL, /jobs/<id>/events, which also
        #       goes in the Location header.
        raise NotImplementedError("TODO: write start_job()")

    @app.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
    async def watch_job(
        job: FoundJob, after: Annotated[int, Depends(resume_after)]
    ) -> AsyncIterator[ServerSentEvent]:
        # TODO: follow the job's log after `after` and yield each logged event with its
        #       event name, its id (as a string) and its data as it is (raw_data: it is
        #       JSON already). The log ends after the terminal event, and so does the stream.
        raise NotImplementedError("TODO: write watch_job()")
        yield  # keeps this a generator; replace both lines

    @app.delete("/jobs/{job_id}")
    async def cancel_job(job: FoundJob) -> JobState:
        # TODO: a job that has already ended cannot be cancelled: HTTPException(409).
        # TODO: otherwise cancel its task, wait until the task has ended (asyncio.wait
        #       does not raise the task's CancelledError), and answer with the job's state.
        raise NotImplementedError("TODO: write cancel_job()")

    return app


app = create_app()
