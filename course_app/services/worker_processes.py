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
thread that started it dies (:mod:`course_app.services.child_process`).
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from course_app.services.child_process import free_port, parent_death_hook, stop_process_group

READY_LINE = "Application startup complete."

_registry: dict[str, WorkerProcesses] = {}
_registry_lock = threading.Lock()
_atexit_registered = False


class WorkerProcessesError(RuntimeError):
    """The workers could not start; the message says why, in one line."""


class WorkerProcesses:
    """One ``uvicorn --workers N`` supervisor and its workers."""

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
        self.app = app
        self.workers = workers
        self.name = name
        self.env = dict(env or {})
        self.grace = grace
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- what a lesson reads -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self.port is None:
            raise WorkerProcessesError(f"workers {self.name!r} have not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The supervisor's process id (with ``workers=1``, the one server process)."""
        return self._process.pid if self._process is not None else None

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
        path = self._dir / "output.log" if self._dir is not None else None
        if path is None or not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> WorkerProcesses:
        """Start the supervisor; returns once all ``workers`` have completed their startup."""
        if self.running:
            return self
        with _registry_lock:
            previous = _registry.get(self.name)
        if previous is not None and previous is not self:
            previous.stop()
        self._dir = Path(tempfile.mkdtemp(prefix=f"course-workers-{self.name}-"))
        for attempt in range(3):
            self.port = free_port()
            try:
                self._launch()
                break
            except WorkerProcessesError as error:
                if "already in use" not in str(error) or attempt == 2:
                    self.port = None
                    self._cleanup_dir()
                    raise
        with _registry_lock:
            _registry[self.name] = self
        _register_atexit()
        return self

    def _launch(self) -> None:
        assert self._dir is not None and self.port is not None
        command = [
            sys.executable, "-m", "uvicorn", self.app,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--log-level", "info",
            "--no-access-log",
            "--timeout-graceful-shutdown", str(math.ceil(self.grace)),  # whole seconds only
            "--timeout-keep-alive", "1",
        ]  # fmt: skip
        log = self._dir / "output.log"
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as output:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() ends the workers too
                preexec_fn=parent_death_hook(),
            )
        deadline = time.monotonic() + self.startup_timeout
        while sum(READY_LINE in line for line in self.logs) < self.workers:
            if self._process.poll() is not None or any(
                "Application startup failed" in line for line in self.logs
            ):
                why = self._why()
                self._kill()
                raise WorkerProcessesError(f"workers {self.name!r} failed to start: {why}")
            if time.monotonic() > deadline:
                self._kill()
                raise WorkerProcessesError(
                    f"workers {self.name!r} did not start within {self.startup_timeout} s"
                )
            time.sleep(0.02)

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

    def stop(self) -> None:
        """Stop the supervisor and all its workers (bounded), and remove the log. Idempotent."""
        self._kill()
        self._cleanup_dir()
        self.port = None
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, grace=self.grace + 3)

    def _cleanup_dir(self) -> None:
        folder, self._dir = self._dir, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> WorkerProcesses:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<WorkerProcesses {self.name!r} {self.app} x{self.workers} {where}>"


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def start_workers(app: str, *, name: str = "workers", **options: object) -> WorkerProcesses:
    """Start ``uvicorn app --workers N``; replaces any running group called ``name``."""
    return WorkerProcesses(app, name=name, **options).start()  # type: ignore[arg-type]


def running_groups() -> list[WorkerProcesses]:
    with _registry_lock:
        return [w for w in _registry.values() if w.running]


def stop_all() -> None:
    """Stop every group of workers this process started (done at interpreter exit too)."""
    with _registry_lock:
        groups = list(_registry.values())
    for group in groups:
        group.stop()


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(stop_all)
        _atexit_registered = True
