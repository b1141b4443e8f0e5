"""The one lifecycle every real program of the course shares: :class:`ManagedProcess`.

redis-server, nginx and ``uvicorn --workers N`` differ in their command line, in how they say
they are ready and in how they say why they failed; everything else is the same and lives
here, once:

- **start** on free loopback ports, with a temporary folder for the program's files and
  output; a port taken between :func:`free_port` and the program's bind is retried on a
  fresh port (on the same port after a pause, for a restart that keeps its port, unless the
  program retries its bind itself: ``kept_port_attempts``);
- **wait until ready**, or raise the manager's error with the program's own last error line
  (``redis server '09' failed to start: ... Address already in use``) as soon as it exits;
- **re-run safe by name**: starting ``name`` again stops the one of the same kind and name
  that was started before (re-running a notebook cell), and everything still running is
  stopped at interpreter exit;
- **stop the group**: each program runs in its own session, so :func:`stop_process_group`
  ends it and whatever it forked (nginx's worker, uvicorn's workers), and a Jupyter
  "Interrupt the kernel" (SIGINT to the kernel's process group) does not reach it;
- on Linux the program ends when the thread that started it dies
  (:func:`parent_death_hook`): this covers what ``atexit`` cannot, a kernel killed with SIGKILL.

A manager subclasses it with what is specific to its program: the class attributes below,
:meth:`~ManagedProcess._program`, :meth:`~ManagedProcess._command`,
:meth:`~ManagedProcess._ready` and, where the last output line is not the reason,
:meth:`~ManagedProcess._why`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar, Self

from course_app.services.child_process import free_port, parent_death_hook, stop_process_group

OUTPUT = "output.log"  # the program's stdout and stderr, in its folder

# One registry for every kind, keyed by (class, name): Redis "09" and workers "09" coexist.
_registry: dict[tuple[type[ManagedProcess], str], ManagedProcess] = {}
_registry_lock = threading.Lock()
_atexit_registered = False


def find_program(name: str, env_var: str, *elsewhere: str) -> str | None:
    """``$env_var`` if set (None if that file is missing), else ``name`` on the PATH, else the
    first of ``elsewhere`` that exists (Debian keeps nginx in /usr/sbin, off a user's PATH)."""
    configured = os.environ.get(env_var)
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which(name) or next((path for path in elsewhere if Path(path).exists()), None)


class ManagedProcess:
    """One real program on loopback, started by :meth:`start` and ended by :meth:`stop`.

    Use it as a context manager, or call :meth:`stop`; whatever is left is stopped at exit.
    """

    kind: ClassVar[str] = "program"  # how messages name it: "redis server '09' failed ..."
    folder_prefix: ClassVar[str] = "program"  # its temp folder: course-<prefix>-<name>-xxxx
    scheme: ClassVar[str] = "http"
    url_path: ClassVar[str] = ""  # after the port: "/0" for Redis database 0
    error: ClassVar[type[RuntimeError]] = RuntimeError
    stop_grace: float = 5.0  # seconds between SIGTERM and SIGKILL
    # Launches on the ports a restart keeps, while the port is "already in use": the old
    # socket may linger for a moment, so retry 0.2 s apart. A program that retries its own
    # bind (nginx: 5 tries, 0.5 s apart) needs one: a port still taken then is taken.
    kept_port_attempts: ClassVar[int] = 3

    def __init__(self, *, name: str, startup_timeout: float) -> None:
        self.name = name
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
        """``<scheme>://127.0.0.1:<port><url_path>``, e.g. ``http://127.0.0.1:54321``."""
        if self.port is None:
            raise self.error(f"{self.label}: not running")
        return f"{self.scheme}://127.0.0.1:{self.port}{self.url_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}"

    @classmethod
    def running_ones(cls) -> list[Self]:
        """Every running one of this kind that this process started."""
        with _registry_lock:
            return [p for p in _registry.values() if isinstance(p, cls) and p.running]

    @classmethod
    def stop_all(cls) -> None:
        """Stop every one of this kind this process started, the latest first."""
        with _registry_lock:
            started = [p for p in _registry.values() if isinstance(p, cls)]
        for process in reversed(started):
            process.stop()

    # -- what a manager says about its program -------------------------------------------------

    def _program(self) -> str:
        """The executable; raise the manager's "not installed" error with the install hint."""
        raise NotImplementedError

    def _command(self, program: str) -> list[str]:
        """The command line, once the ports are chosen; may write files to the folder first."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the program serves (called every 10 ms while it starts)."""
        raise NotImplementedError

    def _failed(self) -> bool:
        """True if the program said it failed while still running (it usually just exits)."""
        return False

    def _why(self) -> str:
        """Why it failed to start, in one line: here, its last line of output."""
        lines = [line.strip() for line in self._read(OUTPUT) if line.strip()]
        return (lines or [f"{self.kind} exited at once"])[-1]

    def _environment(self) -> dict[str, str] | None:
        """The program's environment (None: this process's)."""
        return None

    def _prepare(self) -> None:
        """Make what the folder needs before the first launch (e.g. a certificate)."""

    def _choose_ports(self, fresh: bool) -> None:
        """Pick free ports (``fresh``), or keep the ones a restart reuses."""
        if fresh:
            self.port = free_port()

    def _release_ports(self) -> None:
        self.port = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the program (stopping the one of the same kind and name); returns once ready.

        Raises the manager's "missing" error at once when the program is not installed, and
        its error with the program's own reason when the program cannot start.
        """
        if self.running:
            return self
        program = self._program()
        key = (type(self), self.name)
        with _registry_lock:
            previous = _registry.get(key)
        if previous is not None and previous is not self:
            previous.stop()
        fresh = self.port is None  # a stopped one that kept its port (and folder) restarts
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"course-{self.folder_prefix}-{self.name}-"))
        try:
            self._prepare()
            attempts = 3 if fresh else self.kept_port_attempts
            for attempt in range(1, attempts + 1):
                self._choose_ports(fresh)
                try:
                    self._launch(program)
                    break
                except self.error as error:
                    if "already in use" not in str(error).lower() or attempt == attempts:
                        raise
                    if not fresh:  # the old socket of a restart may linger for a moment
                        time.sleep(0.2)
        except BaseException:
            if fresh:
                self._release_ports()
                self._cleanup_dir()
            raise
        with _registry_lock:
            _registry[key] = self
        _register_atexit()
        return self

    def _launch(self, program: str) -> None:
        assert self._dir is not None
        command = self._command(program)
        with open(self._dir / OUTPUT, "wb") as output:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,  # its own process group: see the module's docstring
                preexec_fn=parent_death_hook(),
            )
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready():
            if self._process.poll() is not None or self._failed():
                why = self._why()
                self._kill()
                raise self.error(f"{self.label} failed to start: {why}")
            if time.monotonic() > deadline:
                self._kill()
                raise self.error(f"{self.label} did not start within {self.startup_timeout} s")
            time.sleep(0.01)

    def restart(self) -> Self:
        """Stop the program (open connections are cut) and start it again on the same ports."""
        self._kill()
        return self.start()

    def stop(self) -> None:
        """Stop the program and all it forked, and remove its folder. Idempotent."""
        self._kill()
        self._cleanup_dir()
        self._release_ports()
        with _registry_lock:
            if _registry.get((type(self), self.name)) is self:
                del _registry[(type(self), self.name)]

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, grace=self.stop_grace)

    def _cleanup_dir(self) -> None:
        folder, self._dir = self._dir, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _read(self, name: str) -> list[str]:
        """The lines of a file in the program's folder (none before it starts or after it stops)."""
        path = self._dir / name if self._dir is not None else None
        if path is None or not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()

    def _summary(self) -> str:
        return self.url if self.running else "stopped"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._summary()}>"


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(ManagedProcess.stop_all)
        _atexit_registered = True
