"""Lesson 13's chat service: 1,000 readers of one answer, in memory and on Redis (issue 20).

Each server is the reference solution (`solutions/13_capstone.py`) in real uvicorn
processes (course_app.services.worker_processes), with `REDIS_URL` pointing at a real redis-server
(course_app.services.redis_server) for the Redis rows; each worker starts the course's fake model
itself. For each server:

1. a poster POSTs "count forever" and reads its whole answer;
2. `--readers` readers (`GET /api/chat/{id}/stream`, from the start) join mid-answer,
   spread over `--client-processes` client processes (one asyncio loop and one shared
   `httpx.AsyncClient` each, so the clients are not the bottleneck of one process);
3. once every reader has a text-delta: the servers' RSS growth / readers (memory per
   reader; each worker's growth and connections are printed too), Redis connections per worker (`CLIENT LIST`, by the pid in each connection's
   name), and the time to first token of `--probes` more readers joining mid-answer, one
   after another, from this process (request sent -> first text-delta received);
4. Stop (`POST /api/chat/{id}/stop`); every reader must then have the poster's answer,
   the same chunks with the same ids, ended by `[DONE]`.

Rows: the in-memory store (1 worker), the Redis store on 1 worker and on `uvicorn --workers
2`, and with `--serve` also `course serve 13 --solution` with `REDIS_URL` (one process).
Targets: every reader complete, <= 10 Redis connections per worker, TTFT p99 < 250 ms,
< 50 KB per reader. The machine's load average is printed with the figures: on a shared
machine they move with it.

Run: .venv/bin/python benchmarks/capstone_readers.py [--readers 1000] [--serve]
     (a few minutes; the model runs at `--pace 5`, a token every 250 ms)
     `--extra-path DIR` measures the servers with what `uvicorn[standard]` adds (uvloop,
     httptools), installed apart: `pip install --target DIR uvloop httptools`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import httpx_sse

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
DELTA = '{"type":"text-delta"'
# No keep-alive for this process's own requests: with 1,000 streams the server's loop runs
# late, and a connection it closes for idleness could meet our next request (fanout.py).
CONTROL_LIMITS = httpx.Limits(max_keepalive_connections=0)


def body(chat_id: str, text: str) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message"}


def digest(events: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(events).encode()).hexdigest()[:16]


# -- a client process: N readers, reporting on stdout ------------------------------------------


async def client_main(url: str, chat_id: str, readers: int) -> None:
    live = 0
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=readers + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(120.0, connect=60.0)

    async def read(http: httpx.AsyncClient) -> None:
        nonlocal live
        events: list[tuple[str, str]] = []
        status, error, counted = 0, "", False
        try:
            stream = f"{url}/api/chat/{chat_id}/stream"
            async with httpx_sse.aconnect_sse(http, "GET", stream) as source:
                status = source.response.status_code
                if status != 200:
                    error = f"{status}: {(await source.response.aread())[:120]!r}"
                if status == 200:
                    async for event in source.aiter_sse():
                        if not event.data:  # a ping comment (httpx_sse: an empty event)
                            continue
                        events.append((event.id, event.data))
                        if not counted and event.data.startswith(DELTA):
                            counted = True
                            live += 1
        except Exception as exc:  # reported, not raised: the row says what failed
            error = f"{type(exc).__name__}: {exc}"[:200]
        if not counted:
            live += 1  # it will never be live: do not wait for it
        done = bool(events) and events[-1][1] == "[DONE]"
        body_events = events[:-1] if done else events
        ids = [event_id for event_id, _ in body_events]
        results.append(
            {
                "status": status,
                "done": done,
                "digest": digest(body_events),
                "error": error,
                "events": len(body_events),
                "repeated": len(ids) - len(set(ids)),
                "first": body_events[0][1][:60] if body_events else "",
                "last": body_events[-1][1][:80] if body_events else "",
            }
        )

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        tasks = [asyncio.create_task(read(http)) for _ in range(readers)]
        reported = -1
        while not all(task.done() for task in tasks):
            if live != reported:
                reported = live
                print(json.dumps({"live": live}), flush=True)
            await asyncio.sleep(0.2)
        print(json.dumps({"live": live}), flush=True)
        await asyncio.gather(*tasks)
    print(json.dumps({"results": results}), flush=True)


class ClientProcess:
    """A client process; its stdout is read by a thread-free poll of its lines."""

    def __init__(self, url: str, chat_id: str, readers: int) -> None:
        command = [sys.executable, __file__, "--client", url, chat_id, str(readers)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        self.live = 0
        self.results: list[dict[str, Any]] | None = None
        os.set_blocking(self.process.stdout.fileno(), False)  # type: ignore[union-attr]
        self._buffer = ""

    def poll(self) -> None:
        try:
            chunk = self.process.stdout.read()  # type: ignore[union-attr]
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            message = json.loads(line)
            self.live = message.get("live", self.live)
            self.results = message.get("results", self.results)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


# -- the servers ---------------------------------------------------------------------------------


class CourseServe:
    """`course serve 13 --solution` as a subprocess (one process)."""

    def __init__(self, env: dict[str, str]) -> None:
        from course_app.services import free_port, parent_death_hook

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [str(ROOT / ".venv/bin/course"), "serve", "13", "--solution"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=parent_death_hook(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/chat/none/stream", timeout=2).status_code == 204:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("course serve 13 --solution did not answer within 60 s")

    @property
    def worker_pids(self) -> list[int]:
        return [self.process.pid]

    def stop(self) -> None:
        from course_app.services import stop_process_group

        stop_process_group(self.process, grace=5)


def start_server(kind: str, redis_url: str | None, pace: float, extra_path: str = "") -> Any:
    from course_app.services import WorkerProcesses

    env = {"COURSE_PACE": str(pace), "OPENAI_BASE_URL": ""}
    if redis_url:
        env["REDIS_URL"] = redis_url
    if extra_path:  # uvicorn's defaults ("auto") pick uvloop and httptools when importable
        env["PYTHONPATH"] = extra_path
    if kind == "serve":
        return CourseServe(env)
    workers = 2 if kind == "2 workers" else 1
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOLUTIONS), extra_path]))
    return WorkerProcesses(
        "13_capstone:app", workers=workers, name=f"capstone-bench-{kind}", env=env, grace=3
    ).start()


def rss(pids: list[int]) -> int:
    import psutil

    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


def readers_held(pid: int, port: int) -> int:
    """The open connections a worker holds on the server's port (its readers, the poster)."""
    import psutil

    connections = psutil.Process(pid).net_connections("tcp")
    return sum(c.status == "ESTABLISHED" and c.laddr.port == port for c in connections)


def redis_connections(redis_url: str, pids: list[int]) -> dict[int, int]:
    import redis

    with redis.Redis.from_url(redis_url, decode_responses=True) as admin:
        me = admin.client_id()
        counts = dict.fromkeys(pids, 0)
        for client in admin.client_list():
            tail = (client.get("name") or "").rsplit("-", 1)[-1]
            if int(client["id"]) != me and tail.isdigit() and int(tail) in counts:
                counts[int(tail)] += 1
        return counts


async def first_token(http: httpx.AsyncClient, url: str, chat_id: str) -> float | None:
    started = time.perf_counter()
    async with httpx_sse.aconnect_sse(http, "GET", f"{url}/api/chat/{chat_id}/stream") as source:
        if source.response.status_code != 200:
            return None
        async for event in source.aiter_sse():
            if event.data.startswith(DELTA):
                return time.perf_counter() - started
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(kind: str, store: str, redis_url: str | None, args: argparse.Namespace) -> dict:
    row: dict[str, Any] = {"server": f"{store}, {kind}"}
    server = None
    clients: list[ClientProcess] = []
    posting: asyncio.Task[None] | None = None
    step = "starting the server"
    try:
        server = await asyncio.to_thread(start_server, kind, redis_url, args.pace, args.extra_path)
        pids = server.worker_pids
        chat_id = f"bench-{kind.replace(' ', '')}-{store}"
        timeout = httpx.Timeout(120.0, connect=60.0)
        async with httpx.AsyncClient(timeout=timeout, limits=CONTROL_LIMITS) as http:
            step = "posting"
            poster: list[tuple[str, str]] = []
            started = asyncio.Event()

            async def post() -> None:
                request = body(chat_id, "count forever")
                url = f"{server.url}/api/chat"
                async with httpx_sse.aconnect_sse(http, "POST", url, json=request) as source:
                    if source.response.status_code != 200:
                        raise RuntimeError(f"POST answered {source.response.status_code}")
                    async for event in source.aiter_sse():
                        if event.data:
                            poster.append((event.id, event.data))
                        if sum(d.startswith(DELTA) for _, d in poster) >= 3:
                            started.set()

            posting = asyncio.create_task(post())
            await asyncio.wait_for(started.wait(), 60)
            before = rss(pids)
            each_before = {pid: rss([pid]) for pid in pids}

            step = "connecting the readers"
            share = [args.readers // args.client_processes] * args.client_processes
            share[0] += args.readers - sum(share)
            clients = [ClientProcess(server.url, chat_id, n) for n in share]
            deadline = time.monotonic() + args.join_bound
            while time.monotonic() < deadline:
                for client in clients:
                    client.poll()
                if sum(c.live for c in clients) >= args.readers:
                    break
                await asyncio.sleep(0.2)
            row["joined"] = sum(c.live for c in clients)
            row["kb per reader"] = (rss(pids) - before) / args.readers / 1024
            # Per worker: its growth over the connections it holds (readers + the poster's).
            port = int(server.url.rsplit(":", 1)[1])
            row["per worker"] = {
                pid: f"{(rss([pid]) - each_before[pid]) / 1024:,.0f} KB"
                f" / {readers_held(pid, port)} connections"
                for pid in pids
            }
            if redis_url:
                row["connections"] = await asyncio.to_thread(redis_connections, redis_url, pids)

            step = "probing the time to first token"
            ttft, probe_failures = [], 0
            for _ in range(args.probes):
                try:
                    seconds = await asyncio.wait_for(first_token(http, server.url, chat_id), 30)
                except (TimeoutError, httpx.HTTPError):
                    seconds = None
                if seconds is None:
                    probe_failures += 1
                else:
                    ttft.append(seconds * 1000)
            row["ttft"] = ttft
            if probe_failures:
                row["probe failures (no token within 30 s)"] = probe_failures

            step = "stopping the answer"
            stop = await http.post(f"{server.url}/api/chat/{chat_id}/stop")
            row["stopped"] = stop.json()
            await asyncio.wait_for(posting, 120)

            step = "reading the readers' results"
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and any(c.results is None for c in clients):
                for client in clients:
                    client.poll()
                await asyncio.sleep(0.2)
            results = [r for c in clients for r in (c.results or [])]
            done = poster[-1][1] == "[DONE]"
            expected = digest(poster[:-1] if done else poster)
            row["complete"] = sum(r["done"] and r["digest"] == expected for r in results)
            row["answer"] = f"{sum(d.startswith(DELTA) for _, d in poster)} deltas"
            failures: dict[str, int] = {}
            for r in results:
                if not (r["done"] and r["digest"] == expected):
                    why = r["error"] or (
                        f"status {r['status']}, done={r['done']}, {r['events']} events"
                        f" (poster {len(poster) - done}), {r['repeated']} repeated,"
                        f" first {r['first']}, last {r['last']}"
                    )
                    failures[why] = failures.get(why, 0) + 1
            if failures:
                row["failures"] = failures
    except Exception as exc:  # the row says which step failed and why; the run goes on
        row["error"] = f"{step}: {type(exc).__name__}: {exc}"[:300]
    finally:
        logs = getattr(server, "logs", None) or []
        said = [line[:200] for line in logs if "Error" in line or "Traceback" in line]
        if said:
            row["server said"] = sorted(set(said))[:8]
        if posting is not None and not posting.done():
            posting.cancel()
            await asyncio.gather(posting, return_exceptions=True)
        for client in clients:
            client.stop()
        if server is not None:
            await asyncio.to_thread(server.stop)
    return row


def print_table(rows: list[dict[str, Any]], readers: int) -> None:
    print()
    print(
        f"| server, {readers:,} readers of one answer | complete | Redis conns/worker"
        " | TTFT p50 | TTFT p99 | memory/reader |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row and "complete" not in row:
            print(f"| {row['server']} | failed: {row['error']} | | | | |")
            continue
        conns = row.get("connections")
        per_worker = " / ".join(str(n) for n in conns.values()) if conns else "-"
        ttft = row.get("ttft") or []
        p50 = f"{statistics.median(ttft):.0f} ms" if ttft else "-"
        p99 = f"{percentile(ttft, 0.99):.0f} ms" if ttft else "-"
        print(
            f"| {row['server']} | {row.get('complete', 0):,}/{readers:,} | {per_worker}"
            f" | {p50} | {p99} | {row.get('kb per reader', 0):.1f} KB |"
        )
    for row in rows:
        extra = {
            k: row[k]
            for k in ("answer", "stopped", "joined", "per worker", "failures", "error")
            if k in row
        }
        print(f"  {row['server']}: {extra}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--probes", type=int, default=50, help="TTFT samples per server")
    parser.add_argument("--pace", type=float, default=5.0, help="the fake model's pace")
    parser.add_argument("--join-bound", type=float, default=300.0, help="seconds to join")
    parser.add_argument("--serve", action="store_true", help="also `course serve 13 --solution`")
    parser.add_argument("--only", default="", help="comma-separated: memory,redis1,redis2,serve")
    parser.add_argument(
        "--extra-path",
        default="",
        help="a folder on the servers' PYTHONPATH, e.g. `pip install --target DIR uvloop"
        " httptools` (uvicorn[standard]'s C loop and parser; the course does not install them)",
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from course_app.services import RedisServer

    plan = [("1 worker", "memory"), ("1 worker", "redis"), ("2 workers", "redis")]
    if args.serve:
        plan.append(("serve", "redis"))
    names = {"memory": plan[0], "redis1": plan[1], "redis2": plan[2], "serve": ("serve", "redis")}
    if args.only:
        plan = [names[name] for name in args.only.split(",")]
    load_before = os.getloadavg()
    rows = []
    with RedisServer(name="capstone-bench") as redis_server:
        for kind, store in plan:
            url = redis_server.url if store == "redis" else None
            rows.append(await measure(kind, store, url, args))
            print(f"measured: {rows[-1]['server']}", flush=True)
    load_after = os.getloadavg()
    print_table(rows, args.readers)
    print(
        f"load average (1, 5, 15 min): before {load_before[0]:.1f} {load_before[1]:.1f}"
        f" {load_before[2]:.1f}, after {load_after[0]:.1f} {load_after[1]:.1f}"
        f" {load_after[2]:.1f}; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        asyncio.run(client_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        asyncio.run(main())
