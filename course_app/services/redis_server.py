"""A real Redis for a lesson: Debian's ``redis-server`` on a free loopback port, data in a temp folder.

    redis_server = start_redis(name="09")      # re-running the cell replaces "09"
    client = redis.asyncio.Redis.from_url(redis_server.url)
    redis_server.stop(keep_data=True)          # Redis goes away...
    redis_server.start()                       # ...and comes back: same port, same data
    redis_server.stop()                        # the process and its folder are gone

``redis-server`` runs as a child process with its append-only file, its log and nothing else
in a temporary folder; it listens on 127.0.0.1 only. ``stop(keep_data=True)`` then
``start()``, or :meth:`RedisServer.restart`, keep the port and the data, as a restarted
production Redis with ``appendonly yes`` would, so a lesson can show an app surviving Redis
going away. Nothing is left behind: a server of the same name is stopped before a new one
starts, every server is stopped at interpreter exit, and on Linux ``redis-server`` ends when
the thread that started it dies (:mod:`course_app.services.managed_process`).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError

from course_app.services.managed_process import OUTPUT, ManagedProcess, find_program

REDIS_HINT = "install it: sudo apt-get install redis-server"
BINARY_ENV = "COURSE_REDIS_SERVER"  # a redis-server binary elsewhere than on the PATH


class RedisServerError(RuntimeError):
    """redis-server could not start; the message says why, in one line."""


class RedisMissing(RedisServerError):
    """No redis-server binary on this machine."""


def redis_binary() -> str | None:
    """The redis-server executable (``$COURSE_REDIS_SERVER``, then the PATH), or None."""
    return find_program("redis-server", BINARY_ENV)


def require_redis() -> str:
    """The redis-server executable, or :class:`RedisMissing` with the one-line install hint."""
    binary = redis_binary()
    if binary is None:
        raise RedisMissing(f"redis-server is not installed: {REDIS_HINT}")
    return binary


class RedisServer(ManagedProcess):
    """One ``redis-server`` process for one lesson (or test)::

    with RedisServer(name="test") as redis_server:
        ... redis_server.url ...

    ``url`` is ``redis://127.0.0.1:<port>/0``, for ``redis.asyncio.Redis.from_url``.
    """

    kind = "redis server"
    folder_prefix = "redis"
    scheme = "redis"
    url_path = "/0"
    error = RedisServerError

    def __init__(self, *, name: str = "redis", startup_timeout: float = 10.0) -> None:
        super().__init__(name=name, startup_timeout=startup_timeout)

    def log(self) -> list[str]:
        """redis-server's own log lines (warnings and errors only)."""
        return self._read("redis.log")

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop redis-server (open connections are cut) and remove its folder. Idempotent.

        ``keep_data=True`` keeps the port and the folder: a later :meth:`start` brings the
        same Redis back, as after an outage (:meth:`restart` does both at once).
        """
        if keep_data:
            self._kill()  # SIGTERM: redis-server flushes the append-only file, then exits
        else:
            super().stop()

    def _program(self) -> str:
        return require_redis()

    def _command(self, program: str) -> list[str]:
        assert self._dir is not None
        (self._dir / "redis.log").unlink(missing_ok=True)  # _why reads this start's lines only
        return [
            program,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
            "--loglevel", "warning",
            "--daemonize", "no",
            "--save", "",  # no RDB snapshots; the append-only file keeps the data
            "--appendonly", "yes",
            "--appendfsync", "no",
        ]  # fmt: skip

    def _ready(self) -> bool:
        assert self.port is not None
        return _answers_ping(self.port)

    def _why(self) -> str:
        # Log lines look like "123:M 01 Jan 2026 00:00:00.000 # Warning: Could not create
        # server TCP listening socket 127.0.0.1:6379: bind: Address already in use", then
        # "... # Failed listening on port 6379 (TCP), aborting.": keep what follows "# " of
        # the last two. Errors in the options go to its output instead.
        said = [
            line.split(" # ", 1)[-1].strip().removeprefix("Warning: ")
            for line in self.log()
            if " # " in line and "Redis is starting" not in line
        ][-2:]
        said += [line.strip() for line in self._read(OUTPUT)][-1:]
        return "; ".join(line for line in said if line) or "redis-server exited at once"


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class PoolExhausted(MaxConnectionsError):
    """Every connection of a client's pool is in use: the pool's limit is the cause, not Redis.

    A subclass of redis-py's ``MaxConnectionsError`` (itself a ``ConnectionError``) whose
    message names the pool and its limit, so that nobody reads it as "Redis is unreachable".
    """


def _exhausted(pool: ConnectionPool, waited: float | None = None) -> PoolExhausted:
    name = pool.connection_kwargs.get("client_name") or "redis"
    wait = f", waited {waited:g} s for one" if waited is not None else ""
    return PoolExhausted(
        f"all {pool.max_connections} connections of the Redis pool {name!r} are in use"
        f" (max_connections={pool.max_connections}{wait})"
    )


class _LimitedPool(ConnectionPool):
    """redis-py's pool, with an error that names its limit ("Too many connections" does not)."""

    def get_available_connection(self):  # type: ignore[no-untyped-def]
        try:
            return super().get_available_connection()
        except MaxConnectionsError:
            raise _exhausted(self) from None


class _WaitingPool(_LimitedPool):
    """Waits up to ``timeout`` seconds for a free connection, then names its limit.

    Not redis-py's ``BlockingConnectionPool``: every waiter and every release there goes
    through one ``asyncio.Condition`` lock, handed over one waiter per event-loop turn, so
    with 200 waiters on a busy loop a released connection reached the next command only
    after seconds (readers waited over 10 s for one of 4 connections). A semaphore hands a
    free slot straight to the next waiter.
    """

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._slots: asyncio.Semaphore | None = None
        self._holding: set[object] = set()  # connections that hold a slot

    async def get_connection(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self._slots is None:  # created on the loop that uses it
            self._slots = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise _exhausted(self, self.timeout) from None
        try:
            connection = await super().get_connection(*args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        self._holding.add(connection)
        return connection

    async def release(self, connection) -> None:  # type: ignore[no-untyped-def]
        try:
            await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                assert self._slots is not None
                self._slots.release()


def redis_client(
    url: str,
    *,
    max_connections: int | None = None,
    wait: float | None = None,
    name: str | None = None,
) -> Redis:
    """An asyncio Redis client for lesson apps: fails fast (one retry), cancels cleanly.

    ``socket_timeout=None``: with a socket timeout (redis-py 8 sets 5 s by default), redis-py
    sends each command inside ``asyncio.wait_for``, which on Python 3.11 swallows a
    cancellation that arrives as the send completes (fixed in 3.12): ``task.cancel()`` on a
    task writing to Redis was lost 299 times in 300, and with it a chat's Stop and a clean
    shutdown. Blocking reads (``XREAD BLOCK``) carry their own timeouts.

    Without ``max_connections`` the pool is redis-py's default (at most 100 connections,
    then ``MaxConnectionsError``), as lesson 09 uses it. With it, the pool holds at most that
    many, and running out raises :class:`PoolExhausted` naming the pool and its limit; with
    ``wait`` (seconds) as well, a command first waits that long for a free connection.
    ``name`` is sent as ``CLIENT SETNAME``, so that ``CLIENT LIST`` shows whose each
    connection is.
    """
    options: dict[str, object] = {
        "decode_responses": True,
        "socket_connect_timeout": 1,
        "socket_timeout": None,
        "retry": Retry(NoBackoff(), 1),
    }
    if name is not None:
        options["client_name"] = name
    if max_connections is None:
        return Redis.from_url(url, **options)  # type: ignore[arg-type]
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    pool: ConnectionPool
    if wait is None:
        pool = _LimitedPool.from_url(url, max_connections=max_connections, **options)
    else:
        pool = _WaitingPool.from_url(url, max_connections=max_connections, timeout=wait, **options)
    return Redis.from_pool(pool)


def start_redis(*, name: str = "redis", **options: float) -> RedisServer:
    """Start a Redis called ``name``; replaces any running one of that name."""
    return RedisServer(name=name, **options).start()  # type: ignore[arg-type]


def running_servers() -> list[RedisServer]:
    return RedisServer.running_ones()


def stop_all() -> None:
    """Stop every Redis this process started (done at interpreter exit too)."""
    RedisServer.stop_all()
