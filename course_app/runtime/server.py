"""Run an ASGI app with uvicorn on a free loopback port, in a background thread.

Why a thread: a Jupyter kernel already runs an event loop, so ``uvicorn.run()`` fails there,
and ``await server.serve()`` on the kernel's loop would deadlock any *synchronous* client
(httpx, requests, the openai SDK) used in a later cell. A thread gives the server its own
loop, and every cell stays free to use blocking clients. ARCHITECTURE.md has the diagram.

    server = serve(app, name="03")   # re-running the cell replaces lesson 03's server
    httpx.get(server.url + "/stream")
    server.stop()                    # bounded, even with clients still connected
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from course_app.runtime.logs import SERVER_THREAD_PREFIX, logbook

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_registry: dict[str, LessonServer] = {}
_registry_lock = threading.Lock()
_atexit_registered = False


class LessonServerError(RuntimeError):
    """A lesson server could not start or stop; the message says why, in one line."""


def _reset_sse_starlette_shutdown_flag() -> None:
    """sse-starlette ends every stream at once while ``AppStatus.should_exit`` is True.

    The flag is process-wide and nothing resets it, so a stop that set it would kill every
    stream of the next server started in this kernel.
    """
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit = False


def _finish(tick: asyncio.Future[None]) -> None:
    if not tick.done():
        tick.set_result(None)


class _WakeableServer(uvicorn.Server):
    """uvicorn's Server, whose main loop can be woken to notice ``should_exit`` at once.

    uvicorn's ``main_loop`` sleeps 0.1 s between ticks and looks at ``should_exit`` only
    on a tick, so every stop waited up to 0.1 s before its shutdown even began (half of a
    stop of an idle server; 50 stops in a test were 5 s of waiting). This is the same loop
    (uvicorn 0.54's, same ``on_tick`` every 0.1 s), with a tick that :meth:`wake` can end
    early from another thread.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _tick: asyncio.Future[None] | None = None

    async def main_loop(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter += 1
            counter = counter % 864000
            self._tick = tick = loop.create_future()
            timer = loop.call_later(0.1, _finish, tick)  # what asyncio.sleep(0.1) does
            await tick
            timer.cancel()
            should_exit = await self.on_tick(counter)

    def wake(self) -> None:
        """End the current tick now (thread-safe): a ``should_exit`` just set is seen."""
        loop, tick = self._loop, self._tick
        if loop is not None and tick is not None:
            try:
                loop.call_soon_threadsafe(_finish, tick)
            except RuntimeError:  # the loop has closed: the server has stopped already
                pass


class LessonServer:
    """One uvicorn server for one lesson, running in a daemon thread.

    Use :func:`serve` in notebooks; use the class directly as a context manager in tests::

        with LessonServer(app) as server:
            httpx.get(server.url)
    """

    def __init__(
        self,
        app: Callable[..., Any] | str,
        *,
        name: str = "lesson",
        host: str = "127.0.0.1",
        port: int = 0,
        grace: float = 1.0,
        startup_timeout: float = 10.0,
    ) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"lesson servers listen on loopback only, not {host!r}")
        self.app = app
        self.name = name
        self.host = host
        self.requested_port = port
        self.grace = grace
        self.startup_timeout = startup_timeout
        self._server: _WakeableServer | None = None
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None
        self._book: list[str] = []
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LessonServer:
        """Start serving; returns once the port accepts connections.

        Raises :class:`LessonServerError` at once if the port is taken or the app's
        startup (lifespan) fails, and after ``startup_timeout`` if startup hangs.
        """
        if self.running:
            return self
        with _registry_lock:
            previous = _registry.get(self.name)
        if previous is not None and previous is not self:
            previous.stop()
        _reset_sse_starlette_shutdown_flag()

        book = logbook()
        self._book = book.open_book()
        self._crash = None
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.requested_port,
            log_config=None,  # keep uvicorn from configuring logging: course_app.runtime.logs does it
            access_log=False,
            # uvicorn spends ~0.1-0.2 s of its own on a shutdown besides this timeout (a
            # fixed 0.1 s sleep before it; tasks are cancelled and joined after it), so
            # leave that much: stop() then stays within `grace` even with a stream open.
            timeout_graceful_shutdown=max(0.0, self.grace - 0.25),  # type: ignore[arg-type]
            timeout_keep_alive=1,  # idle keep-alive connections must not delay a stop
        )
        self._server = _WakeableServer(config)
        self._thread = threading.Thread(
            target=self._run, name=f"{SERVER_THREAD_PREFIX}{self.name}", daemon=True
        )
        self._thread.start()
        book.bind(self._book, self._thread.ident)
        self._wait_until_started()
        with _registry_lock:
            _registry[self.name] = self
        _register_atexit()
        return self

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        except BaseException as exc:  # SystemExit on a bind error; never let it escape
            self._crash = exc

    def _wait_until_started(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._thread.join()
                logbook().close_book(self._book)
                raise LessonServerError(
                    f"lesson server {self.name!r} failed to start: {self._why()}"
                )
            if time.monotonic() > deadline:
                self._server.should_exit = True
                self._server.force_exit = True
                self._thread.join(1)  # a hung lifespan cannot be interrupted: don't wait long
                logbook().close_book(self._book)
                raise LessonServerError(
                    f"lesson server {self.name!r} did not start within {self.startup_timeout} s"
                    " (does the app's lifespan startup hang?)"
                )
            time.sleep(0.005)
        self._port = self._server.servers[0].sockets[0].getsockname()[1]

    def _why(self) -> str:
        # The last line of a logged traceback is the exception itself: keep just that.
        errors = [
            line.split(": ", 1)[-1].strip().splitlines()[-1]
            for line in self._book
            if line.startswith("ERROR")
        ]
        # uvicorn adds a generic last line ("Application startup failed. Exiting.")
        specific = [e for e in errors if "Exiting" not in e] or errors
        if specific:
            return specific[0]
        if self._crash is not None and not isinstance(self._crash, SystemExit):
            return f"{type(self._crash).__name__}: {self._crash}"
        return "uvicorn exited during startup"

    def stop(self) -> None:
        """Stop the server: bounded by ``grace`` seconds even if clients stay connected.

        uvicorn stops accepting connections, lets open responses finish for ``grace``
        seconds, then cancels them. sse-starlette streams are told to finish first, through
        its process-wide ``AppStatus`` flag, which is reset afterwards.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        from sse_starlette.sse import AppStatus

        with _registry_lock:
            alone = all(s is self or not s.running for s in _registry.values())
        if alone and thread.is_alive():
            AppStatus.should_exit = True  # other servers' streams would end too, hence `alone`
        server.should_exit = True
        server.wake()
        thread.join(self.grace + 3)
        if thread.is_alive():
            server.force_exit = True
            thread.join(3)
        if alone:
            _reset_sse_starlette_shutdown_flag()
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]
        logbook().close_book(self._book)
        self._server = None
        self._thread = None
        if thread.is_alive():
            raise LessonServerError(f"lesson server {self.name!r} did not stop")

    def __enter__(self) -> LessonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what a lesson reads -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._port is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LessonServerError(f"lesson server {self.name!r} has not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def logs(self) -> list[str]:
        """Log lines from uvicorn and the ``lesson`` logger since this server started."""
        return list(self._book)

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<LessonServer {self.name!r} {where}>"


def serve(app: Callable[..., Any] | str, *, name: str = "lesson", **options: Any) -> LessonServer:
    """Start ``app`` on a free loopback port; replaces any running server called ``name``."""
    return LessonServer(app, name=name, **options).start()


def running_servers() -> list[LessonServer]:
    with _registry_lock:
        return [s for s in _registry.values() if s.running]


def stop_all() -> None:
    """Stop every lesson server of this process (the kernel does this at exit too)."""
    for server in running_servers():
        server.stop()


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(stop_all)
        _atexit_registered = True
