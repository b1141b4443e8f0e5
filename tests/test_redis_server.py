"""course_app.services.redis_server: a real redis-server per lesson, replaced on re-run, never left behind."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import redis.asyncio

from course_app.services import (
    REDIS_HINT,
    RedisMissing,
    RedisServer,
    RedisServerError,
    redis_binary,
    start_redis,
)
from tests.unavailable import unavailable


@pytest.fixture
def needs_redis() -> None:
    """Skips on a learner's machine without redis-server; fails in CI, where it must run."""
    if redis_binary() is not None:
        return
    message = f"these tests need redis-server: {REDIS_HINT}"
    unavailable(message)


def ping(url: str) -> bool:
    async def main() -> bool:
        client = redis.asyncio.Redis.from_url(url)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    return asyncio.run(main())


def gone(pid: int, timeout: float = 5.0) -> bool:
    """The process has ended (a zombie waiting for its parent counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.usefixtures("needs_redis")
def test_start_ping_stop() -> None:
    server = RedisServer(name="t-basic").start()
    try:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert repr(server) == f"<RedisServer 't-basic' {server.url}>"
        assert ping(server.url) is True
        pid = server.pid
        folder = server._dir
    finally:
        server.stop()
    assert pid is not None and gone(pid)
    assert folder is not None and not folder.exists()
    assert not server.running and repr(server) == "<RedisServer 't-basic' stopped>"
    server.stop()  # idempotent


@pytest.mark.usefixtures("needs_redis")
def test_restart_keeps_port_and_data() -> None:
    with RedisServer(name="t-restart") as server:
        port = server.port

        async def write() -> str:
            client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
            try:
                return await client.xadd("s", {"k": "v"})
            finally:
                await client.aclose()

        entry = asyncio.run(write())
        old_pid = server.pid
        server.restart()
        assert server.port == port and server.pid != old_pid
        assert old_pid is not None and gone(old_pid)

        async def read() -> list:
            client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
            try:
                return await client.xrange("s")
            finally:
                await client.aclose()

        assert asyncio.run(read()) == [(entry, {"k": "v"})]


@pytest.mark.usefixtures("needs_redis")
def test_starting_the_same_name_again_replaces_it() -> None:
    first = start_redis(name="t-rerun")
    first_pid = first.pid
    second = start_redis(name="t-rerun")
    try:
        assert first_pid is not None and gone(first_pid)
        assert not first.running and second.running
        assert ping(second.url)
    finally:
        second.stop()


@pytest.mark.usefixtures("needs_redis")
def test_two_servers_at_once() -> None:
    with RedisServer(name="t-one") as one, RedisServer(name="t-two") as two:
        assert one.port != two.port
        assert ping(one.url) and ping(two.url)


def test_a_missing_binary_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without redis-server
    monkeypatch.delenv("COURSE_REDIS_SERVER", raising=False)
    with pytest.raises(RedisMissing) as caught:
        RedisServer(name="t-missing").start()
    assert str(caught.value) == (
        "redis-server is not installed: install it: sudo apt-get install redis-server"
    )


@pytest.mark.usefixtures("needs_redis")
def test_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = RedisServer(name="t-busy")
        server.port = holder.getsockname()[1]  # as on a restart: the port is fixed
        with pytest.raises(RedisServerError, match=r"failed to start: .*already in use") as caught:
            server.start()
        assert "\n" not in str(caught.value)
        server.stop()


@pytest.mark.usefixtures("needs_redis")
def test_redis_ends_when_the_process_that_started_it_is_killed() -> None:
    # SIGKILL leaves no time for atexit: the parent-death signal is what stops redis-server.
    script = textwrap.dedent(
        """
        import sys, time
        from course_app.services import start_redis
        redis_server = start_redis(name="orphan")
        print(redis_server.pid, redis_server._dir, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid, folder = child.stdout.readline().split()
        assert not gone(int(pid), timeout=0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5)
    assert gone(int(pid))
    shutil.rmtree(folder)  # what atexit would have removed, had the process had the chance
