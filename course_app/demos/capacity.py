"""How many streams one worker holds, and what each costs: measured, not guessed.

    rows = measure_all(streams=200, rate=10, seconds=1.0)   # the three ways to stream
    print(render(rows))

Each measurement starts a fresh ``uvicorn`` *process* serving :data:`app` (so its CPU time
and memory are its own, not the notebook's), opens ``streams`` connections to one route,
lets them run for ``seconds`` and reads the process's CPU time and resident memory with
``psutil``. Every stream sends ``rate`` small events per second; the client counts what
arrives. ``benchmarks/capacity.py`` runs the same with bigger numbers.

The three routes send the same events: ``/streaming`` frames them by hand on a Starlette
``StreamingResponse``, ``/sse-starlette`` uses sse-starlette's ``EventSourceResponse`` and
``/native`` FastAPI's own ``fastapi.sse``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse as NativeEventSourceResponse
from sse_starlette import EventSourceResponse

KINDS = {
    "StreamingResponse": "/streaming",
    "sse-starlette": "/sse-starlette",
    "fastapi.sse": "/native",
}
T = TypeVar("T")

app = FastAPI(title="capacity")


@app.get("/streaming")
async def streaming(rate: float = 10) -> StreamingResponse:
    async def frames() -> AsyncIterator[str]:
        n = 0
        while True:
            n += 1
            yield f"id: {n}\ndata: {json.dumps({'n': n})}\n\n"
            await asyncio.sleep(1 / rate)

    return StreamingResponse(frames(), media_type="text/event-stream")


@app.get("/sse-starlette")
async def sse_starlette(rate: float = 10) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        n = 0
        while True:
            n += 1
            yield {"id": str(n), "data": json.dumps({"n": n})}
            await asyncio.sleep(1 / rate)

    return EventSourceResponse(events())


@app.get("/native", response_class=NativeEventSourceResponse)
async def native(rate: float = 10) -> AsyncIterator[dict[str, int]]:
    n = 0
    while True:
        n += 1
        yield {"n": n}
        await asyncio.sleep(1 / rate)


@dataclass(frozen=True)
class Measurement:
    kind: str
    streams: int  # opened and streaming
    rate: float  # events per second asked of each stream
    events_per_s: float  # received, all streams together
    cpu_percent: float  # of one core, while streaming
    kb_per_stream: float  # resident memory added per open stream

    @property
    def events_per_core(self) -> float:
        """Events per second one core could send at this cost (a linear estimate)."""
        return self.events_per_s / (self.cpu_percent / 100) if self.cpu_percent > 0 else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own, in a thread (a notebook's loop is busy)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="capacity-client")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


async def _open(port: int, path: str, counts: list[int], index: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"{path} answered {head.splitlines()[0]!r}")

    async def count() -> None:
        while data := await reader.read(65536):
            counts[index] += data.count(b"data:")

    writer.counter = asyncio.create_task(count())  # type: ignore[attr-defined]
    return writer


async def _drive(
    port: int, path: str, streams: int, seconds: float, pid: int
) -> tuple[int, float, float, float]:
    import psutil

    process = psutil.Process(pid)
    rss_before = process.memory_info().rss
    counts = [0] * streams
    writers = []
    for start in range(0, streams, 50):  # in batches, as a burst of clients would arrive
        batch = range(start, min(streams, start + 50))
        writers += await asyncio.gather(*(_open(port, path, counts, i) for i in batch))
    await asyncio.sleep(0.3)  # let every stream settle into its rhythm
    rss_open = process.memory_info().rss
    received_before = sum(counts)
    cpu_before = sum(process.cpu_times()[:2])
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    received = sum(counts) - received_before
    for writer in writers:
        writer.counter.cancel()  # type: ignore[attr-defined]
        writer.close()
    return received, elapsed, cpu, (rss_open - rss_before)


class _Server:
    """``uvicorn course_app.demos.capacity:app`` in a process of its own, on a free port."""

    def __init__(self) -> None:
        self.port = _free_port()
        command = [
            sys.executable, "-m", "uvicorn", "course_app.demos.capacity:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "1",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the capacity server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _measure_on(
    server: _Server, kind: str, streams: int, rate: float, seconds: float
) -> Measurement:
    server.wait_ready()
    path = f"{KINDS[kind]}?rate={rate}"
    received, elapsed, cpu, rss = _run(
        _drive(server.port, path, streams, seconds, server.process.pid)
    )
    return Measurement(
        kind=kind,
        streams=streams,
        rate=rate,
        events_per_s=received / elapsed,
        cpu_percent=100 * cpu / elapsed,
        kb_per_stream=rss / streams / 1024,
    )


def measure(
    kind: str, *, streams: int = 200, rate: float = 10, seconds: float = 1.0
) -> Measurement:
    """Open ``streams`` streams of one kind on a fresh uvicorn process and measure it."""
    return measure_all(kinds=[kind], streams=streams, rate=rate, seconds=seconds)[0]


def measure_all(
    *, kinds: list[str] | None = None, streams: int = 200, rate: float = 10, seconds: float = 1.0
) -> list[Measurement]:
    """One fresh process per kind (started together, measured one after the other)."""
    kinds = list(KINDS) if kinds is None else kinds
    servers = [_Server() for _ in kinds]
    try:
        return [
            _measure_on(server, kind, streams, rate, seconds)
            for server, kind in zip(servers, kinds, strict=True)
        ]
    finally:
        for server in servers:
            server.stop()


def render(rows: list[Measurement]) -> str:
    lines = [
        f"{'':<18} {'streams':>7} {'events/s':>9} {'CPU':>6} {'memory/stream':>14} {'events/s per core':>18}",
    ]
    for row in rows:
        lines.append(
            f"{row.kind:<18} {row.streams:>7} {row.events_per_s:>9.0f} {row.cpu_percent:>5.0f}%"
            f" {row.kb_per_stream:>11.1f} KB {row.events_per_core:>18,.0f}"
        )
    return "\n".join(lines)
