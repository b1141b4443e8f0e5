"""Fan-out: 1,000 SSE clients, one publisher. How fast, how late, how much memory per client?

Each server runs in a subprocess (`uvicorn --workers N`, course_app.services.worker_processes) so
its memory can be measured; the clients are raw asyncio sockets in this process, on
loopback. For each server:

1. connect the clients (in batches) and measure the server's RSS before and after:
   memory per connection = RSS growth / clients;
2. steady rate: publish `--rate` messages per second for `--seconds` (POST, like an app
   would); each message carries its publish time (`time.monotonic()`, one clock for every
   process of the machine). Latency of a message = until the *last* client received it;
   p50 and p99 over the messages;
3. bursts: `--burst` messages published at once on the server (`POST /burst`); delivered
   per second = burst x clients / time until the last client has the last message; the
   best of `--repeat` bursts (a busy machine slows some of them down).

Servers, all on course_app.streams.hub.Hub (one bounded queue per client):
- `raw ASGI, batched`: a bare ASGI app writes SSE frames itself, all the messages queued
  for a client in one write (course_app.demos.broadcast_app.take_queued), each message encoded
  once for all clients (course_app.demos.broadcast_app.frame): the ceiling;
- `sse-starlette, batched`: `EventSourceResponse` fed the same batches as bytes;
- `sse-starlette, 1 event/write`: the same frames, one message per `yield`;
- `fastapi.sse, 1 event/write`: a `response_class=EventSourceResponse` route yielding one
  `ServerSentEvent` per message (it cannot send several frames in one write);
- `lesson app`: course_app.demos.broadcast_app (sse-starlette, batched, typed heartbeats);
- `lesson app, 2 workers, Redis`: the same app, POST appends to a Redis stream and each
  worker's relay feeds its hub (a Redis from course_app.services.redis_server). Its burst, like the
  1-worker app's, goes through POST /messages, ten requests at a time.

Targets (lesson 09): p99 < 250 ms with 1,000 clients, < 50 KB per connection, the hub's
delivered rate within 20 % of the ceiling.

Run: .venv/bin/python benchmarks/fanout.py [--clients 1000] [--rate 20] [--seconds 5]
     (about a minute; `ulimit -n` is raised to the hard limit if it is too low)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sse_starlette import EventSourceResponse as StarletteEventSourceResponse

from course_app.demos.broadcast_app import frame, take_queued
from course_app.streams import Hub, RequestCleanup

HERE = Path(__file__).resolve().parent
QUEUE_SIZE = 2000  # larger than any burst: the benchmark measures speed, not the drop policy
PAYLOAD = re.compile(rb'"text":"(\d+) ([0-9.]+)"')


# -- the server side (imported by uvicorn in the subprocess as `fanout:app`) -----------------


def make_app() -> FastAPI:
    hub = Hub(queue_size=QUEUE_SIZE, history=10)

    def publish(n: int, t: float) -> None:
        data = json.dumps({"author": "bench", "text": f"{n} {t}"}, separators=(",", ":"))
        hub.publish("message", data)

    async def raw_asgi(scope: dict, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with hub.subscribe() as subscription:
            async for m in subscription:
                batch, _ = await take_queued(subscription, m)
                body = b"".join(frame(q) for q in batch)  # each frame encoded once, for all
                await send({"type": "http.response.body", "body": body, "more_body": True})

    app = FastAPI()
    app.mount("/raw", raw_asgi)

    @app.get("/sse-starlette")
    async def starlette() -> StarletteEventSourceResponse:
        async def events() -> AsyncIterator[bytes]:
            with hub.subscribe() as subscription:
                async for m in subscription:
                    yield frame(m)

        return StarletteEventSourceResponse(events(), ping=0)

    @app.get("/sse-starlette-batched")
    async def starlette_batched() -> StarletteEventSourceResponse:
        async def events() -> AsyncIterator[bytes]:
            with hub.subscribe() as subscription:
                async for m in subscription:
                    batch, _ = await take_queued(subscription, m)
                    yield b"".join(frame(q) for q in batch)

        return StarletteEventSourceResponse(events(), ping=0)

    @app.get("/fastapi-sse", response_class=EventSourceResponse)
    async def native(cleanup: RequestCleanup) -> AsyncIterator[ServerSentEvent]:
        subscription = hub.subscribe()
        cleanup.callback(subscription.close)  # fastapi.sse may leave this generator paused
        async for m in subscription:
            yield ServerSentEvent(raw_data=m.data, event=m.event, id=m.id)

    @app.post("/messages")
    async def post(request: Request) -> dict[str, str]:
        body = await request.json()
        n, t = body["data"]["text"].split()
        publish(int(n), float(t))
        return {}

    @app.post("/burst")
    async def burst(count: int, start: int) -> dict[str, float]:
        t = time.monotonic()
        for n in range(start, start + count):
            publish(n, t)
        return {"t": t}

    @app.get("/subscribers")
    async def subscribers() -> dict[str, int]:
        return {"subscribers": hub.subscribers}

    return app


if os.environ.get("FANOUT_BENCH_SERVER"):
    app = make_app()


# -- the client side --------------------------------------------------------------------------


@dataclass
class Server:
    label: str
    app: str
    path: str
    workers: int = 1
    redis: bool = False


SERVERS = [
    Server("raw ASGI, batched (ceiling)", "fanout:app", "/raw/"),
    Server("sse-starlette, batched", "fanout:app", "/sse-starlette-batched"),
    Server("sse-starlette, 1 event/write", "fanout:app", "/sse-starlette"),
    Server("fastapi.sse, 1 event/write", "fanout:app", "/fastapi-sse"),
    Server("lesson app, 1 worker", "course_app.demos.broadcast_app:app", "/stream"),
    Server(
        "lesson app, 2 workers, Redis", "course_app.demos.broadcast_app:app", "/stream", 2, True
    ),
]


class Clients:
    """N raw-socket SSE clients; for each message number, when the last client got it."""

    def __init__(self) -> None:
        self.received: dict[int, int] = {}  # message number -> clients that have it
        self.last_arrival: dict[int, float] = {}
        self.sent_at: dict[int, float] = {}
        self.connected = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def connect(self, port: int, path: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        self.writers.append(writer)
        self.tasks.append(asyncio.create_task(self._read(reader)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        counted = False
        while line := await reader.readline():
            if not counted and line.startswith((b"event: init", b"HTTP/1.1 200")):
                counted = True
                self.connected += 1
            if line.startswith(b"data:") and (match := PAYLOAD.search(line)):
                n = int(match.group(1))
                now = time.monotonic()
                self.sent_at.setdefault(n, float(match.group(2)))
                self.received[n] = self.received.get(n, 0) + 1
                self.last_arrival[n] = now

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()


def rss(pids: list[int]) -> int:
    import psutil

    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


async def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Phase:
    """The step a measurement is in, for the row that says where a server failed."""

    def __init__(self) -> None:
        self.name = "starting the server"


# No keep-alive for the benchmark's own requests. The servers close a connection idle for
# 1 s after its last response (WorkerProcesses passes `--timeout-keep-alive 1`), and with
# 1,000 streams both event loops run late: the fastapi.sse server's timer fired while the
# next POST, sent on that connection after 1.8 s, sat unread in its buffer, so the close
# came back to the client as a reset (`httpx.ReadError`, in a burst or the steady phase).
# Which side is late is not ours to control; a fresh connection per request has no timer
# running (uvicorn starts it when a response completes), so that close can never meet it.
CONTROL_LIMITS = httpx.Limits(max_keepalive_connections=0)


async def measure(
    server: Server, args: argparse.Namespace, redis_url: str | None, phase: Phase
) -> dict:
    from course_app.services import WorkerProcesses

    env = {"PYTHONPATH": str(HERE), "FANOUT_BENCH_SERVER": "1"}
    if redis_url:
        env["REDIS_URL"] = redis_url
    with WorkerProcesses(server.app, workers=server.workers, name="bench-fanout", env=env) as w:
        pids = w.worker_pids
        clients = Clients()
        try:
            return await _measure(server, args, w.url, w.port, pids, clients, phase)
        finally:
            clients.close()


async def _measure(
    server: Server,
    args: argparse.Namespace,
    url: str,
    port: int,
    pids: list[int],
    clients: Clients,
    phase: Phase,
) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=CONTROL_LIMITS) as http:
        phase.name = "warm-up request"
        await http.get("/")  # warm up (imports, first request)
        before = rss(pids)
        phase.name = f"connecting {args.clients} clients"
        for start in range(0, args.clients, 100):
            batch = min(100, args.clients - start)
            await asyncio.gather(*(clients.connect(port, server.path) for _ in range(batch)))
        if not await wait_until(lambda: clients.connected == args.clients, 60):
            raise RuntimeError(f"only {clients.connected} clients connected within 60 s")
        await asyncio.sleep(1)  # let the server settle
        per_connection = (rss(pids) - before) / args.clients

        # Steady rate, through POST /messages, as an app publishes.
        phase.name = "steady phase"
        count = int(args.rate * args.seconds)
        started = time.monotonic()
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / args.rate - time.monotonic()))
            text = f"{n} {time.monotonic()!r}"
            body = {"event": "message", "data": {"author": "bench", "text": text}}
            response = await http.post("/messages", json=body)
            response.raise_for_status()
        complete = await wait_until(
            lambda: all(clients.received.get(n, 0) >= args.clients for n in range(count)), 30
        )
        latencies = sorted(
            clients.last_arrival[n] - clients.sent_at[n]
            for n in range(count)
            if clients.received.get(n, 0) >= args.clients
        )

        # Bursts: as fast as the server can fan out (lesson app: as fast as POST goes).
        # The best of --repeat bursts: the machine may be busy with something else.
        rates = []
        first = count
        for n in range(args.repeat):
            phase.name = f"burst {n + 1} of {args.repeat}"
            rates.append(await burst(server, http, clients, first, args))
            first += args.burst
    delivered = max(rates)
    return {
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "complete": complete,
        "rate": delivered,
        "kb": per_connection / 1024,
    }


async def burst(
    server: Server, http: httpx.AsyncClient, clients: Clients, first: int, args: argparse.Namespace
) -> float:
    """Publish ``args.burst`` messages at once; deliveries per second (0 if some never came)."""
    last = first + args.burst - 1
    if server.app.startswith("fanout"):
        answer = await http.post("/burst", params={"count": args.burst, "start": first})
        t0 = answer.json()["t"]
    else:  # the lesson app publishes through POST only: ten requests at a time
        t0 = time.monotonic()
        numbers = iter(range(first, last + 1))

        async def poster() -> None:
            for n in numbers:
                body = {"event": "message", "data": {"author": "bench", "text": f"{n} {t0!r}"}}
                (await http.post("/messages", json=body)).raise_for_status()

        await asyncio.gather(*(poster() for _ in range(10)))
    done = await wait_until(
        lambda: all(clients.received.get(n, 0) >= args.clients for n in range(first, last + 1)),
        60,
    )
    elapsed = max(clients.last_arrival.get(n, t0) for n in range(first, last + 1)) - t0
    return args.burst * args.clients / elapsed if done and elapsed > 0 else 0.0


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the steady phase")
    parser.add_argument("--burst", type=int, default=200, help="messages in the burst")
    parser.add_argument("--repeat", type=int, default=3, help="bursts; the best one counts")
    parser.add_argument("--only", help="run only the servers whose label contains this")
    args = parser.parse_args()
    raise_open_files(args.clients * 2 + 256)  # the children (servers) inherit it

    from course_app.services import RedisServer

    print(
        f"{args.clients} clients on loopback; steady {args.rate:g} msg/s for {args.seconds:g} s,"
        f" then {args.repeat} bursts of {args.burst}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'server':<30} {'p50':>8} {'p99':>8} {'delivered/s':>12} {'per conn':>9}")
    rows = {}
    for server in SERVERS:
        if args.only and args.only not in server.label:
            continue
        phase = Phase()
        try:
            if server.redis:
                phase.name = "starting Redis"
                with RedisServer(name="bench-fanout") as redis_server:
                    row = await measure(server, args, redis_server.url, phase)
            else:
                row = await measure(server, args, None, phase)
        except Exception as exc:  # one server failing must not hide the others' rows
            why = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            print(f"{server.label:<30} FAILED in the {phase.name}: {why}: {detail}", flush=True)
            continue
        rows[server.label] = row
        notes = [] if row["complete"] else ["some steady messages never reached every client"]
        if not row["rate"]:
            notes.append("no burst reached every client within 60 s")
        note = f"  ({'; '.join(notes)})" if notes else ""
        print(
            f"{server.label:<30} {row['p50'] * 1000:>5.0f} ms {row['p99'] * 1000:>5.0f} ms"
            f" {row['rate']:>12,.0f} {row['kb']:>6.1f} KB{note}",
            flush=True,
        )
    ceiling = rows.get(SERVERS[0].label, {}).get("rate")
    if ceiling:
        for label, row in rows.items():
            if label != SERVERS[0].label and row["rate"]:
                print(f"  {label}: {row['rate'] / ceiling:.0%} of the ceiling's delivered rate")


if __name__ == "__main__":
    asyncio.run(main())
