"""A real Next.js app in front of a FastAPI stream (lesson 12), and the API behind it.

``frontends/nextjs/`` at the repository's root is a minimal Next.js app (App Router, versions
pinned in its ``package-lock.json``, installed by ``make lab``/``make test``) that reaches
the API two ways:

- ``/rewrite/<path>``: ``rewrites()`` in ``next.config.mjs``. Next proxies the request
  itself (``next/dist/server/lib/router-utils/proxy-request.js``, the ``httpxy`` proxy),
  which pipes the API's body into the response;
- ``/route/<path>``: a Route Handler (``app/route/[...path]/route.js``) that fetches the
  API and returns ``new Response(upstream.body, {headers})``. Next writes each chunk of
  that body and flushes it (``next/dist/server/pipe-readable.js``).

Both go through the ``compress`` step of Next's server (``router-server.js``, on unless
``compress: false``), the npm ``compression`` package: it gzips when the client accepts
gzip, the type is compressible (``text/event-stream`` is) and the response has no
``Cache-Control: no-transform``.

:class:`NextFrontend` runs ``next dev`` on a free loopback port with ``COURSE_API_PORT``
set to the API's port (``next.config.mjs`` and the Route Handler read it). ``next dev``
rather than ``next build`` + ``next start``: a production build bakes the ``rewrites()``
destination, port included, into ``.next/routes-manifest.json`` at build time, and it costs
about 37 s (measured: 11 CPU-seconds) where ``next dev`` is ready in about 2 s. Both
compress and proxy with the same ``router-server.js``, and gave the same results.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import anyio
import httpx
import psutil
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from course_app.services import ManagedProcess

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontends" / "nextjs"
NEXT_MIN_NODE = (20, 9)  # next@16's "engines"
NEXT_HINT = (
    "install Node.js 20.9 or later with npm (Debian/Ubuntu: sudo apt-get install nodejs npm;"
    " macOS: brew install node), then run `make lab` (it runs `npm ci` in frontends/nextjs)"
)
DIST_PARENT = ".next-course"  # inside FRONTEND_DIR: Next refuses a distDir outside the app


class NextError(RuntimeError):
    """The Next.js frontend could not start; the message says why, in one line."""


class NextMissing(NextError):
    """Node.js, or the app's installed packages, are missing: the message says what to do."""


def node_binary() -> str | None:
    """The ``node`` program, if installed."""
    return shutil.which("node")


def _next_script() -> Path:
    return FRONTEND_DIR / "node_modules" / "next" / "dist" / "bin" / "next"


def next_problem() -> str | None:
    """Why the Next.js frontend cannot run here (what to install), or None if it can."""
    node = node_binary()
    if node is None:
        return f"Node.js is not installed: {NEXT_HINT}"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    found = re.match(r"v(\d+)\.(\d+)", version.strip())
    if found is None or (int(found[1]), int(found[2])) < NEXT_MIN_NODE:
        return f"Next.js 16 needs Node.js 20.9 or later, this is {version.strip()}: {NEXT_HINT}"
    if not _next_script().exists():
        return f"the Next.js app in frontends/nextjs is not installed: {NEXT_HINT}"
    return None


def _remove_stale_dist_dirs() -> None:
    """Remove the build folders of ``next dev`` runs whose Python process has gone
    (a kernel killed with SIGKILL never reached :meth:`NextFrontend.stop`)."""
    parent = FRONTEND_DIR / DIST_PARENT
    if not parent.is_dir():
        return
    for folder in parent.iterdir():
        owner = folder.name.split("-", 1)[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


class NextFrontend(ManagedProcess):
    """``next dev`` serving ``frontends/nextjs`` on a free loopback port, in front of the API
    on ``api_port`` (re-run safe by name, stopped at exit: see ``ManagedProcess``)."""

    kind = "Next.js frontend"
    folder_prefix = "nextjs"
    error: ClassVar[type[RuntimeError]] = NextError

    def __init__(
        self,
        api_port: int,
        *,
        name: str = "next",
        compress: bool = True,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(name=name, startup_timeout=startup_timeout)
        self.api_port = api_port
        self.compress = compress  # next.config.mjs's `compress` (Next's default: true)
        self._dist: str | None = None

    def _program(self) -> str:
        problem = next_problem()
        if problem is not None:
            raise NextMissing(problem)
        node = node_binary()
        assert node is not None
        return node

    def _prepare(self) -> None:
        # `next dev` locks its build folder, and the course runs several at once (a notebook
        # and the tests): each gets its own, named after this process so that a folder left
        # by a killed kernel can be recognised and removed.
        _remove_stale_dist_dirs()
        self._dist = f"{DIST_PARENT}/{os.getpid()}-{self.name}-{uuid.uuid4().hex[:8]}"

    def _command(self, program: str) -> list[str]:
        assert self._dir is not None and self.port is not None
        # Run from this program's own folder: in CI or a container Next keeps a telemetry
        # preferences file in `<working directory>/cache`, even with telemetry disabled.
        return [
            "/bin/sh", "-c", 'cd "$0" && exec "$@"', str(self._dir),
            program, str(_next_script()), "dev", str(FRONTEND_DIR),
            "--port", str(self.port), "--hostname", "127.0.0.1",
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        assert self._dist is not None
        return {
            **os.environ,
            "COURSE_API_PORT": str(self.api_port),  # read by next.config.mjs and the handler
            "COURSE_NEXT_DIST_DIR": self._dist,
            "COURSE_NEXT_COMPRESS": "1" if self.compress else "0",
            "NEXT_TELEMETRY_DISABLED": "1",
            "NO_COLOR": "1",
            "NODE_ENV": "development",
        }

    def _ready(self) -> bool:
        if not any("Ready in" in line for line in self._read("output.log")):
            return False
        assert self.port is not None
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        super().stop()
        dist, self._dist = self._dist, None
        if dist is not None:
            shutil.rmtree(FRONTEND_DIR / dist, ignore_errors=True)

    def log(self) -> list[str]:
        """What ``next dev`` has printed so far (its request log, compile messages, errors)."""
        return self._read("output.log")


def start_next(api_port: int, *, name: str = "next", compress: bool = True) -> NextFrontend:
    """Start the Next.js app in front of the API on ``api_port``; returns once it serves.

    Raises :class:`NextMissing` (with what to install) when Node.js or the app's packages
    are missing, :class:`NextError` with Next's own last line when it cannot start.
    """
    return NextFrontend(api_port, name=name, compress=compress).start()


# -- the API behind the frontend ---------------------------------------------------------------


@dataclass
class EndlessRun:
    """What one ``/endless`` stream did: events sent, and whether its generator closed."""

    sent: int = 0
    closed: threading.Event = field(default_factory=threading.Event)


def create_upstream_app() -> FastAPI:
    """The API behind the frontend.

    - ``/gated`` sends one event (then sets ``app.state.first_sent``) and waits for
      ``app.state.gate`` (a :class:`threading.Event`, set from the lesson's thread)
      before its last one;
    - ``/endless?run=<id>`` sends an event every 20 ms until its client leaves, recording
      in ``app.state.runs[id]`` how many it sent and when its generator closed.

    ``?no_transform=1`` adds ``no-transform`` to the usual ``Cache-Control: no-cache``.
    """
    app = FastAPI(title="Lesson 12: the API behind a frontend server")
    app.state.gate = threading.Event()
    app.state.first_sent = threading.Event()
    app.state.runs = {}

    def headers(no_transform: bool) -> dict[str, str]:
        cache = "no-cache, no-transform" if no_transform else "no-cache"
        return {"Cache-Control": cache, "X-Accel-Buffering": "no"}

    @app.get("/gated")
    async def gated(no_transform: bool = False) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "data: first\n\n"
            app.state.first_sent.set()  # the server has sent it on (this runs after the send)
            # The gate is a thread's Event (the lesson's cells run on another thread).
            await anyio.to_thread.run_sync(app.state.gate.wait, abandon_on_cancel=True)
            yield "data: last\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers=headers(no_transform)
        )

    @app.get("/endless")
    async def endless(run: str, no_transform: bool = False) -> StreamingResponse:
        record = app.state.runs[run] = EndlessRun()

        async def events() -> AsyncIterator[str]:
            try:
                while True:
                    record.sent += 1
                    yield f"data: {record.sent}\n\n"
                    await anyio.sleep(0.02)
            finally:  # runs when Starlette sees the client leave and cancels the stream
                record.closed.set()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers=headers(no_transform)
        )

    return app


def first_event_arrival(
    url: str, app: FastAPI, *, accept_gzip: bool = True, wait: float = 3.0
) -> tuple[str, str]:
    """When the first event of ``app``'s ``/gated`` reached the client, and the
    Content-Encoding it came with.

    The API sends its first event and then waits for its gate. The gate opens when the
    client has decoded that event, or ``wait`` seconds after the API sent it: the verdict
    is "while the stream was open" if the client decoded the event before the gate opened,
    "only when the stream ended" if after, "never" if not at all. It depends on the order
    of those things, not on how fast they were (``wait`` only bounds how long to wait for
    an event that something on the way holds back).
    """
    gate, sent = app.state.gate, app.state.first_sent
    gate.clear()
    sent.clear()
    decoded, lock = threading.Event(), threading.Lock()
    outcome = {"encoding": "none", "verdict": "never"}

    def read() -> None:  # the client, on its own thread: this one keeps the gate
        headers = {"accept-encoding": "gzip" if accept_gzip else "identity"}
        with (
            httpx.Client(timeout=60) as client,
            client.stream("GET", url, headers=headers) as answer,
        ):
            encoding = outcome["encoding"] = answer.headers.get("content-encoding", "none")
            decoder = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
            text = ""
            for chunk in answer.iter_raw():
                text += (decoder.decompress(chunk) if decoder else chunk).decode()
                if "data: first" in text and not decoded.is_set():
                    with lock:  # the order of "decoded" and "gate opened" is the verdict
                        open_ = not gate.is_set()
                        outcome["verdict"] = (
                            "while the stream was open" if open_ else "only when the stream ended"
                        )
                        decoded.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if sent.wait(60):  # the API has sent its first event (Next may compile first)
            decoded.wait(wait)
    finally:
        with lock:
            gate.set()
        reader.join(60)
    return outcome["verdict"], outcome["encoding"]


def after_client_leaves(url: str, app: FastAPI, *, more: int = 100, limit: float = 20.0) -> str:
    """Read ``/endless`` through ``url`` until its first event, leave, and say what the
    API's stream did next: ``"stopped"`` (its generator closed) or ``"kept streaming"``
    (it sent ``more`` events to nobody first, 2 s at its pace). Order, not speed, decides;
    ``limit`` only bounds a run where neither happened (``"no verdict"``) or where no event
    came through at all (``"no first event"``)."""
    run = uuid.uuid4().hex
    separator = "&" if "?" in url else "?"
    target = f"{url}{separator}run={run}"
    with httpx.Client(timeout=limit) as client:
        headers = {"accept-encoding": "identity"}  # see the first event: no gzip to hold it
        try:
            with client.stream("GET", target, headers=headers) as answer:
                next(line for line in answer.iter_lines() if line.startswith("data:"))
        except httpx.TimeoutException:  # an endless stream held back on the way
            return "no first event"
        record: EndlessRun = app.state.runs[run]
        left_at = record.sent
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if record.closed.is_set():  # nothing is sent after the close: `sent` is final
            return "stopped" if record.sent < left_at + more else "kept streaming"
        if record.sent >= left_at + more:
            return "kept streaming"
        time.sleep(0.01)
    return "no verdict"
