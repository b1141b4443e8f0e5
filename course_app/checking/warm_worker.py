"""A warm pytest worker: a check starts in milliseconds instead of seconds.

A fresh ``python -m pytest`` pays for its imports before its first test: pytest, FastAPI,
Starlette, httpx ... 1.5-2 s of CPU on a small machine, more than most lessons' tests take.
The first check starts this worker in the background. It imports all that once, then forks
a child per run (``course check``, ``course progress``, lesson 11's runs of the learner's
tests, a notebook's ``run_pytest`` cell). The child turns itself into the process that
``python -m pytest`` would have been: the run's working directory, environment,
``sys.path`` and ``sys.argv``, stdin from /dev/null, stdout and stderr to a file, its own
process group, an ordinary interpreter exit (non-daemon threads joined, ``atexit`` run).
What the worker imported is shared, read-only in effect: each child gets a copy.

What a check reports does not change, only when it starts:

- an endless loop: pytest-timeout stops the test in the child as before; past the whole
  run's timeout the caller kills the child's process group and says so;
- a syntax error, a failing import: they happen in the child, where the exercise is loaded
  fresh (the worker never imports exercises, solutions, tests or conftest files);
- an edited ``course_app`` (or an upgraded library): before each fork the worker compares
  the files of every module it imported with what they were; if one changed it exits and
  the caller starts a new one;
- a caller that goes away (Ctrl+C) closes the connection, and the child ends its process
  group with it.

One worker serves every caller with the same Python, the same ``course_app`` and the same
values of the variables its imports read (``WORKER_ENV``); it exits after ``IDLE_SECONDS``
without a request. ``COURSE_CHECK_WORKER=0`` turns it off: each run is a fresh
subprocess again. Only POSIX systems fork; elsewhere every run is a subprocess.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENABLE_ENV = "COURSE_CHECK_WORKER"  # "0" runs every pytest as a fresh subprocess
IDLE_SECONDS = 20 * 60  # a learner reads and edits for minutes between two checks
START_SECONDS = 60.0  # a worker not listening after this long is given up on (a subprocess runs)
POLL_SECONDS = 0.1  # how often a waiting caller looks at its cancel event
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding course_app/

# Imported before the worker serves its first request: what nearly every run needs.
CORE = (
    "pytest",
    "fastapi",
    "fastapi.testclient",
    "fastapi.sse",
    "fastapi.responses",
    "httpx",
    "httpx_sse",
    "sse_starlette",
    "uvicorn",
    "course_app.runtime.server",
    "course_app.runtime.pace",
    "course_app.checking.exercise_loader",
    "course_app.checking.stubs",
)
# Imported one at a time while the worker waits for requests: what some lessons need.
LATER = (
    # pytest's plugins from entry points: loading them is most of its start-up after imports
    "anyio.pytest_plugin",
    "pytest_timeout",
    "platformdirs.pytest_plugin",
    "xdist.looponfail",
    "hypothesis",
    "openai",
    "sqlalchemy.ext.asyncio",
    "aiosqlite",
    "redis.asyncio",
    "course_app.runtime.inspector",
    "course_app.runtime.pages",
    "course_app.streams.event_log",
    "course_app.streams.hub",
    "course_app.streams.request_cleanup",
    "course_app.streams.request_guards",
    "course_app.streams.quiet_disconnects",
    "course_app.streams.shutdown",
    "course_app.streams.stream_timing",
    "course_app.streams.answer_streams",
    "course_app.fake_openai.app",
    "course_app.fake_openai.settings",
    # "module:function": called, not only imported. Streams from the fake server once, so
    # the openai SDK's event models are built before the fork, not in each check.
    "course_app.fake_openai.warm_up:warm_up",
    "course_app.services.managed_process",
    "course_app.services.redis_server",
    "course_app.services.nginx_proxy",
    "course_app.services.worker_processes",
)
# Never imported by the worker: pytest would warn that a plugin it loads with -p was imported
# before it could rewrite its asserts, and matplotlib reads its settings when imported.
NEVER = ("course_app.checking.pytest_report", "course_app.checking.pytest_fixtures", "matplotlib")
# Variables that modules read when imported, so a worker serves only callers that agree on
# them: the interpreter's own (PYTHON*, the locale), Hypothesis' CI detection, openai's.
WORKER_ENV = (
    "LANG", "LC_ALL", "LC_CTYPE", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "BUILDKITE",
    "CIRCLECI", "CIRRUS_CI", "CODEBUILD_BUILD_ID", "HEROKU_TEST_RUN_ID", "TEAMCITY_VERSION",
    "bamboo.buildKey", "__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI", "OPENAI_API_TYPE",
    "OPENAI_API_VERSION", "AZURE_OPENAI_ENDPOINT", "OPENAI_LOG",
)  # fmt: skip
# Set by each run for itself (the child applies them): no reason for another worker.
PER_RUN_ENV = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")


@dataclass(frozen=True)
class Finished:
    """How a pytest run ended: its exit status (None: it died without one) and its output."""

    returncode: int | None
    output: str


class Cancelled(Exception):
    """The caller's ``cancel`` event was set: the run was stopped, its result is unknown."""


def run_pytest(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    cancel: threading.Event | None = None,
) -> Finished:
    """``python -m pytest args`` in ``cwd`` with exactly ``env``; raises TimeoutExpired.

    In a child of the warm worker when one can serve, else in a fresh subprocess. Setting
    ``cancel`` (from another thread) stops the run and raises :class:`Cancelled`.
    """
    cancel = cancel or threading.Event()
    if _enabled(env):
        finished = _run_in_worker(args, cwd=cwd, env=env, timeout=timeout, cancel=cancel)
        if finished is not None:
            return finished
    deadline = time.monotonic() + timeout
    with subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        while True:
            try:
                output, _ = process.communicate(timeout=POLL_SECONDS)
                return Finished(process.returncode, output)
            except subprocess.TimeoutExpired:
                if cancel.is_set() or time.monotonic() > deadline:
                    process.kill()
                    process.communicate()
                    if cancel.is_set():
                        raise Cancelled from None
                    raise subprocess.TimeoutExpired(process.args, timeout) from None


def _enabled(env: dict[str, str]) -> bool:
    return (
        env.get(ENABLE_ENV, "1") != "0"
        and hasattr(os, "fork")
        and hasattr(socket, "AF_UNIX")
        and sys.platform != "darwin"  # fork without exec is unsafe with macOS frameworks
    )


# --- where a worker lives ---------------------------------------------------------------


def _key(env: dict[str, str]) -> str:
    """One worker per Python, course_app and the variables its imports read."""
    interpreter = {k: v for k, v in env.items() if k.startswith("PYTHON") and k not in PER_RUN_ENV}
    parts = [
        sys.executable,
        sys.version,
        str(PACKAGE_PARENT),
        sorted(interpreter.items()),
        sorted((k, env[k]) for k in WORKER_ENV if k in env),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _home() -> Path:
    """A folder only this user can use (the socket accepts whoever can reach it)."""
    home = Path(tempfile.gettempdir()) / f"course-check-{os.getuid()}"
    home.mkdir(mode=0o700, exist_ok=True)
    info = home.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{home} must belong to you alone (chmod 700)")
    return home


def _paths(key: str) -> tuple[Path, Path, Path]:
    """The worker's socket, lock file and pid file."""
    home = _home()
    return home / f"{key}.sock", home / f"{key}.lock", home / f"{key}.pid"


def worker_pid(env: dict[str, str] | None = None) -> int | None:
    """The pid of the worker that serves ``env`` (default: this process's), if one runs."""
    try:
        sock, _, pid_file = _paths(_key(dict(os.environ) if env is None else env))
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid if sock.exists() else None


def worker_status(
    env: dict[str, str] | None = None, *, start: bool = False
) -> dict[str, Any] | None:
    """What the worker that serves ``env`` would refuse a run for (``start``: starting one
    if none runs; a status request never makes a worker exit).

    ``pending``: imports it still makes while idle (``LATER``); ``threads``: its threads (a
    fork copies only the forking one, so a worker with more refuses); ``never``: imported
    modules from ``NEVER``; ``changed``: a module file changed since it imported it.
    None when no worker answers.
    """
    env = dict(os.environ) if env is None else env
    try:
        sock_path, _, _ = _paths(_key(env))
    except OSError:
        return None
    conn = _connect(sock_path, env, start=start)
    if conn is None:
        return None
    with conn:
        try:
            conn.sendall(b'{"status": true}\n')
            reply = _Replies(conn).next(time.monotonic() + START_SECONDS, threading.Event())
        except (OSError, ValueError, TimeoutError):
            return None
    return reply or None


def stop_workers() -> int:
    """Stop every warm worker of this user (a test suite's end, a benchmark's start)."""
    stopped = 0
    with contextlib.suppress(OSError):
        for pid_file in _home().glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
                stopped += 1
    return stopped


# --- the caller's side --------------------------------------------------------------------


def _connect(sock_path: Path, env: dict[str, str], *, start: bool) -> socket.socket | None:
    """A connection to the worker, starting one if asked; None when none answers."""
    deadline = time.monotonic() + START_SECONDS
    started = False
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(sock_path))
            return conn
        except OSError:
            conn.close()
        if not start or time.monotonic() > deadline:
            return None
        if not started:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _start_worker(sock_path, env)
            started = True
        time.sleep(0.02)


def _start_worker(sock_path: Path, env: dict[str, str]) -> None:
    worker_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    # It forks and its first process exits at once (waited for here): the worker is nobody's
    # child, so a notebook kernel that started it does not count it among its processes.
    subprocess.run(
        [sys.executable, "-m", "course_app.checking.warm_worker", str(sock_path)],
        cwd=PACKAGE_PARENT,  # so that it imports this very course_app
        env=worker_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a terminal's Ctrl+C is for the check, not the worker
        timeout=START_SECONDS,
        check=False,
    )


def _run_in_worker(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: float, cancel: threading.Event
) -> Finished | None:
    """The run in a child of the worker; None when no worker can take it."""
    deadline = time.monotonic() + timeout
    try:
        sock_path, _, _ = _paths(_key(env))
    except OSError:
        return None
    with tempfile.TemporaryDirectory(prefix="course-check-") as tmp:
        output = Path(tmp) / "output.txt"
        request = {"args": args, "cwd": str(cwd), "env": env, "output": str(output)}
        for _attempt in range(2):  # a stale worker exits; the second attempt starts a new one
            conn = _connect(sock_path, env, start=True)
            if conn is None:
                return None
            with conn:
                replies = _Replies(conn)
                try:
                    conn.sendall(json.dumps(request).encode() + b"\n")
                    first = replies.next(deadline, cancel)
                except (OSError, ValueError):
                    return None
                except TimeoutError:
                    raise subprocess.TimeoutExpired(["pytest", *args], timeout) from None
                if first.get("stale"):
                    continue
                pid = first.get("pid")
                if not isinstance(pid, int):
                    return None
                try:
                    last = replies.next(deadline, cancel)
                except TimeoutError:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(["pytest", *args], timeout) from None
                except Cancelled:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                    raise
                except (OSError, ValueError):
                    last = {}  # the child died without a word: read what it wrote
            text = output.read_text(encoding="utf-8", errors="replace") if output.exists() else ""
            return Finished(last.get("status"), text)
    return None


class _Replies:
    """The worker's one-line JSON replies, read while watching a deadline and a cancel event."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""
        conn.settimeout(POLL_SECONDS)

    def next(self, deadline: float, cancel: threading.Event) -> dict[str, Any]:
        """The next reply; ``{}`` at the end of the connection. Raises TimeoutError past the
        deadline and Cancelled once ``cancel`` is set."""
        while b"\n" not in self.buffer:
            if cancel.is_set():
                raise Cancelled
            if time.monotonic() > deadline:
                raise TimeoutError
            try:
                chunk = self.conn.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                return {}
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError("a reply is a JSON object")
        return reply


# --- the worker's side --------------------------------------------------------------------


@dataclass
class _Request:
    conn: socket.socket
    args: list[str]
    cwd: str
    env: dict[str, str]
    output: str


def _module_files() -> dict[str, tuple[int, int]]:
    """(mtime, size) of the file of every imported module: what a stale worker differs in."""
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path not in files:
            with contextlib.suppress(OSError):
                info = os.stat(path)
                files[path] = (info.st_mtime_ns, info.st_size)
    return files


def _unchanged(files: dict[str, tuple[int, int]]) -> bool:
    for path, seen in files.items():
        try:
            info = os.stat(path)
        except OSError:
            return False
        if (info.st_mtime_ns, info.st_size) != seen:
            return False
    return True


def _import(name: str) -> None:
    """Import ``name``; for ``"module:function"``, also call the function."""
    module, _, function = name.partition(":")
    with contextlib.suppress(Exception):  # a missing extra: the child imports what it needs
        __import__(module)
        if function:
            getattr(sys.modules[module], function)()


def _reap(signum: int, frame: object) -> None:
    """Collect finished children (their CPU time then counts as the worker's children's)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _lock(fd: int) -> bool:
    """The worker's lock; a stale worker that is exiting lets go of it within moments."""
    deadline = time.monotonic() + 5
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def serve(sock_path: Path) -> _Request | None:
    """Serve until idle or stale; returns the request in a forked child, None in the worker."""
    _, lock_path, pid_file = _paths(sock_path.stem)
    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    if not _lock(lock):
        return None  # another worker for the same key runs already
    base_path = sys.path[1:]  # sys.path[0] is the folder it was started in
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()  # a dead worker's socket
    listener.bind(str(sock_path))
    listener.listen(64)
    pid_file.write_text(str(os.getpid()))
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    in_child = False
    # Python's advice for a process that forks without exec: no collections in the worker, and
    # its objects frozen before each fork. A child's collections (pytest runs several at its
    # end) then skip the worker's objects: they neither walk nor copy their memory pages.
    gc.disable()
    try:
        for name in CORE:
            _import(name)
        later = list(LATER)
        files = _module_files()
        while True:
            listener.settimeout(0.05 if later else IDLE_SECONDS)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if not later:
                    return None  # idle for IDLE_SECONDS
                _import(later.pop(0))
                files = _module_files()
                continue
            request = _read_request(conn)
            if request == "status":
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(_status(later, files)).encode() + b"\n")
                conn.close()
                continue
            if request is None:
                conn.close()
                continue
            if not _unchanged(files) or threading.active_count() > 1 or _imported_never():
                with contextlib.suppress(OSError):
                    conn.sendall(b'{"stale": true}\n')
                conn.close()
                return None
            gc.freeze()
            if os.fork() == 0:
                in_child = True
                gc.enable()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                listener.close()
                os.close(lock)  # the lock is the worker's, not its children's
                sys.path[:] = base_path
                return request
            conn.close()
    finally:
        if not in_child:
            with contextlib.suppress(OSError):
                pid_file.unlink()
                sock_path.unlink()


def _imported_never() -> bool:
    return any(name.startswith(NEVER) for name in sys.modules)


def _status(later: list[str], files: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The reply to a status request (see :func:`worker_status`)."""
    return {
        "pid": os.getpid(),
        "pending": len(later),
        "threads": threading.active_count(),
        "never": sorted(name for name in sys.modules if name.startswith(NEVER)),
        "changed": not _unchanged(files),
    }


def _read_request(conn: socket.socket) -> _Request | str | None:
    """A run's request, ``"status"`` for a status request, None for anything else."""
    conn.settimeout(5)
    try:
        with conn.makefile("r", encoding="utf-8") as lines:
            data = json.loads(lines.readline())
        conn.settimeout(None)
        if data.get("status") is True:
            return "status"
        return _Request(conn, list(data["args"]), data["cwd"], dict(data["env"]), data["output"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _become_pytest(request: _Request) -> None:
    """Turn this forked child into ``python -m pytest`` as the caller would have started it."""
    import importlib
    import linecache

    os.setsid()  # one process group: the caller can end it with everything it started
    conn = request.conn
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(request.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    time.tzset()
    extra = [p for p in request.env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [os.getcwd(), *extra]
    sys.dont_write_bytecode = bool(request.env.get("PYTHONDONTWRITEBYTECODE"))
    importlib.invalidate_caches()
    linecache.clearcache()
    import pytest

    sys.argv = [str(Path(pytest.__file__).with_name("__main__.py")), *request.args]
    threading.Thread(target=_end_with_caller, args=(conn,), daemon=True).start()


def _end_with_caller(conn: socket.socket) -> None:
    """The caller closed the connection before the end (Ctrl+C, killed): stop the run."""
    with contextlib.suppress(OSError):
        while conn.recv(1024):
            pass
    with contextlib.suppress(OSError):
        os.killpg(0, signal.SIGKILL)


def _child(request: _Request) -> int:
    import atexit

    _become_pytest(request)
    status: list[int] = [1]

    def report() -> None:
        # Registered first, so it runs last: after the run's own atexit cleanups.
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            request.conn.sendall(json.dumps({"status": status[0]}).encode() + b"\n")
            request.conn.shutdown(socket.SHUT_WR)

    atexit.register(report)
    import pytest

    try:  # what `python -m pytest` does: pytest.main() reads sys.argv
        status[0] = int(pytest.main())
    except SystemExit as exc:
        status[0] = exc.code if isinstance(exc.code, int) else 1
    return status[0]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.fork() != 0:
        os._exit(0)  # see _start_worker
    request = serve(Path(argv[0]))
    if request is None:
        return 0
    return _child(request)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Every run in a fresh subprocess for the length of the block (tests compare both)."""
    old = os.environ.get(ENABLE_ENV)
    os.environ[ENABLE_ENV] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[ENABLE_ENV]
        else:
            os.environ[ENABLE_ENV] = old


if __name__ == "__main__":
    sys.exit(main())
