"""``uvicorn module:app --workers N`` as a real subprocess on a free loopback port.

A lesson server (:mod:`course_app.runtime.server`) is one process. Production servers are not:
``uvicorn --workers 2`` starts a supervisor that binds the port once and forks two worker
processes that share it, each with its own memory and event loop. Whatever one worker keeps
in memory (a hub's subscribers, a replay buffer) the other never sees::

    workers = start_workers("course_app.demos.broadcast_app:app", name="09", workers=2,
                            env={"REDIS_URL": redis_server.url})
    httpx.get(workers.url + "/stream")     # reaches one worker or the other
    workers.worker_pids                    # the workers' process ids
    workers.stop()                         # the supervisor and every worker

The app is given as an import string (the workers import it themselves); ``env`` is added
to this process's environment for them. :meth:`WorkerProcesses.start` returns once every
worker has finished its startup; a start-up failure raises at once with the app's own
error line. Nothing is left behind: a group of the same name is stopped before a new one
starts, all are stopped at interpreter exit, and on Linux the supervisor ends when the
thread that started it dies (:mod:`course_app.services.managed_process`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping

import psutil

from course_app.services.managed_process import OUTPUT, ManagedProcess

READY_LINE = "Application startup complete."


class WorkerProcessesError(RuntimeError):
    """The workers could not start; the message says why, in one line."""


class WorkerProcesses(ManagedProcess):
    """One ``uvicorn --workers N`` supervisor and its workers.

    ``url`` is the base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``.
    """

    kind = "workers"
    folder_prefix = "workers"
    error = WorkerProcessesError

    def __init__(
        self,
        app: str,
        *,
        workers: int = 2,
        name: str = "workers",
        env: Mapping[str, str] | None = None,
        grace: int = 1,
        startup_timeout: float = 60.0,
    ) -> None:
        if ":" not in app:
            raise ValueError(
                f"app must be an import string such as 'package.module:app', not {app!r}"
            )
        if workers < 1:
            raise ValueError("workers must be at least 1")
        super().__init__(name=name, startup_timeout=startup_timeout)
        self.app = app
        self.workers = workers
        self.env = dict(env or {})
        self.grace = grace
        # uvicorn's supervisor gives its workers `grace` seconds to end their streams.
        self.stop_grace = grace + 3

    # -- what a lesson reads (``pid`` is the supervisor's; with workers=1, the server's) ------

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the processes that serve requests."""
        if not self.running or self._process is None:
            return []
        if self.workers == 1:
            return [self._process.pid]
        try:
            children = psutil.Process(self._process.pid).children()
        except psutil.NoSuchProcess:
            return []
        # multiprocessing's spawn start method adds a resource tracker: not a worker.
        return sorted(
            child.pid for child in children if "resource_tracker" not in " ".join(_cmdline(child))
        )

    @property
    def logs(self) -> list[str]:
        """What uvicorn and the app wrote (stdout and stderr of every process)."""
        return self._read(OUTPUT)

    # -- what the managed-process base needs --------------------------------------------------

    def _program(self) -> str:
        return sys.executable

    def _command(self, program: str) -> list[str]:
        return [
            program, "-m", "uvicorn", self.app,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--log-level", "info",
            "--no-access-log",
            "--timeout-graceful-shutdown", str(math.ceil(self.grace)),  # whole seconds only
            "--timeout-keep-alive", "1",
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}

    def _ready(self) -> bool:
        """Every worker has completed its startup (one line each)."""
        return sum(READY_LINE in line for line in self.logs) >= self.workers

    def _failed(self) -> bool:
        # The supervisor notices a worker's failed startup only at its next health check.
        return any("Application startup failed" in line for line in self.logs)

    def _why(self) -> str:
        lines = [line.strip() for line in self.logs if line.strip()]
        # uvicorn's own reason ("ERROR:    Error loading ASGI app. Could not import module
        # ...") comes first; the supervisor's "Child process [N] failed to start" says less.
        generic = ("Child process", "Application startup failed", "Exception in ASGI", "Traceback")
        errors = [
            line.removeprefix("ERROR:").strip()
            for line in lines
            if line.startswith("ERROR:") and not any(g in line for g in generic)
        ]
        if errors:
            return errors[0]
        # A failing lifespan logs a traceback: its last line is the exception itself.
        plain = [line for line in lines if not line.startswith(("INFO:", "WARNING:", "ERROR:"))]
        return (plain or lines or ["uvicorn exited at once"])[-1]

    def _summary(self) -> str:
        return f"{self.app} x{self.workers} {super()._summary()}"


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def start_workers(app: str, *, name: str = "workers", **options: object) -> WorkerProcesses:
    """Start ``uvicorn app --workers N``; replaces any running group called ``name``."""
    return WorkerProcesses(app, name=name, **options).start()  # type: ignore[arg-type]


def running_groups() -> list[WorkerProcesses]:
    return WorkerProcesses.running_ones()


def stop_all() -> None:
    """Stop every group of workers this process started (done at interpreter exit too)."""
    WorkerProcesses.stop_all()
