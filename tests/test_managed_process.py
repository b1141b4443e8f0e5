"""course_app.services.managed_process: the one lifecycle redis-server, nginx and uvicorn share.

Most tests run a tiny program of their own (``python -m http.server``) under the base, so they
test the lifecycle, not one program; the ones that need a process to die or exit use Redis, as a
lesson does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import psutil
import pytest

from course_app.services import REDIS_HINT, ManagedProcess, RedisServer, redis_binary
from tests.unavailable import unavailable


class EchoError(RuntimeError):
    pass


class Tiny(ManagedProcess):
    """``python -m http.server`` on a free port: the smallest program with a port."""

    error = EchoError

    def __init__(self, *, name: str = "echo") -> None:
        super().__init__(name=name, startup_timeout=60.0)

    def _program(self) -> str:
        return sys.executable

    def _command(self, program: str) -> list[str]:
        assert self._dir is not None
        serve = ["-m", "http.server", str(self.port), "--bind", "127.0.0.1"]
        return [program, *serve, "--directory", str(self._dir)]

    def _ready(self) -> bool:
        # An answer, not just an accepted connection: another program may hold the port.
        try:
            with urllib.request.urlopen(self.url, timeout=0.5) as response:
                return response.status == 200
        except OSError:
            return False


class Echo(Tiny):
    kind = "echo server"
    folder_prefix = "echo"


class OtherEcho(Tiny):
    """A second kind of program (the same one, under another manager)."""

    kind = "other echo server"
    folder_prefix = "other"


class Failing(Echo):
    """Says a few things, then exits: what a program with a bad config does."""

    def _command(self, program: str) -> list[str]:
        said = "print('starting up'); print(); import sys; sys.exit('no config at /etc/echo.conf')"
        return [program, "-c", said]


@pytest.fixture
def needs_redis() -> None:
    if redis_binary() is not None:
        return
    message = f"this test needs redis-server: {REDIS_HINT}"
    unavailable(message)


def test_rerunning_a_name_replaces_only_the_same_kind() -> None:
    first = Echo(name="t-same").start()
    other = OtherEcho(name="t-same").start()  # lesson 09 names both its Redis and workers "09"
    try:
        again = Echo(name="t-same").start()
        assert not first.running, "starting 't-same' again should stop the first one"
        assert other.running, "an other kind with the same name must be left alone"
        assert Echo.running_ones() == [again] and OtherEcho.running_ones() == [other]
    finally:
        Echo.stop_all()
        OtherEcho.stop_all()
    assert not again.running and not other.running


def test_a_program_that_exits_fails_with_its_last_line_and_leaves_nothing() -> None:
    failing = Failing(name="t-fail")
    with pytest.raises(EchoError) as caught:
        failing.start()
    assert str(caught.value) == "echo server 't-fail' failed to start: no config at /etc/echo.conf"
    assert failing.port is None and failing._dir is None and not failing.running
    assert Failing.running_ones() == []


def test_a_port_taken_before_the_program_binds_it_is_retried_on_a_fresh_one() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = iter([taken])

        class Unlucky(Echo):
            """The first "free" port it is handed has been taken since (free_port's race)."""

            def _choose_ports(self, fresh: bool) -> None:
                super()._choose_ports(fresh)
                self.port = next(ports, self.port)

        with Unlucky(name="t-unlucky") as echo:
            assert echo.running and echo.port != taken


def test_stop_is_idempotent_and_a_stopped_one_starts_again() -> None:
    echo = Echo(name="t-again")
    with echo:
        folder = echo._dir
    assert folder is not None and not folder.exists()
    assert repr(echo) == "<Echo 't-again' stopped>"
    echo.stop()
    with pytest.raises(EchoError, match=r"^echo server 't-again': not running$"):
        echo.url  # noqa: B018
    with echo:
        assert repr(echo) == f"<Echo 't-again' {echo.url}>"


def run_starter(script: str) -> subprocess.Popen[str]:
    """A Python process that starts a Redis, like a Jupyter kernel: its own process group,
    and a SIGINT handler (the kernel's "Interrupt" raises KeyboardInterrupt in the cell)."""
    prelude = (
        "import signal; signal.signal(signal.SIGINT, lambda *_: print('interrupted', flush=True))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.usefixtures("needs_redis")
def test_interrupting_the_kernel_does_not_stop_its_redis() -> None:
    # Jupyter interrupts a kernel with SIGINT to the kernel's whole process group; a
    # redis-server in that group shut down with it (redis-server ends on SIGINT).
    starter = run_starter(
        """
        import os, sys
        from course_app.services import start_redis
        redis_server = start_redis(name="t-interrupt")
        print(redis_server.pid, flush=True)
        sys.stdin.readline()  # until the test has interrupted us
        print(redis_server.running, os.getpgid(redis_server.pid) != os.getpgid(0), flush=True)
        """
    )
    try:
        assert starter.stdin is not None and starter.stdout is not None
        pid = int(starter.stdout.readline())
        os.killpg(starter.pid, signal.SIGINT)  # what the notebook's Interrupt button sends
        assert starter.stdout.readline() == "interrupted\n"
        starter.stdin.write("\n")
        starter.stdin.flush()
        running, own_group = starter.stdout.readline().split()
        # The cause, exactly: a signal to a process group cannot reach a process outside it.
        assert own_group == "True", "redis-server must run in its own process group (a session)"
        # The effect, as a learner would see it (in the group, Redis ends within ~0.1 s).
        assert running == "True" and psutil.pid_exists(pid), "Redis ended with the interrupt"
        starter.stdin.close()
        assert starter.wait(60) == 0  # a normal exit: atexit stops Redis, removes its folder
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)


@pytest.mark.usefixtures("needs_redis")
def test_what_is_still_running_at_exit_is_stopped_and_its_folder_removed() -> None:
    starter = run_starter(
        """
        from course_app.services import start_redis
        redis_server = start_redis(name="t-exit")
        print(redis_server.pid, redis_server._dir, flush=True)
        """
    )
    out, _ = starter.communicate(timeout=60)
    pid, folder = out.split()
    assert starter.returncode == 0
    assert not Path(folder).exists(), "atexit should have stopped it and removed its folder"
    assert not psutil.pid_exists(int(pid)), "atexit should have stopped redis-server"


def test_the_course_managers_are_managed_processes() -> None:
    from course_app.services import NginxProxy, WorkerProcesses

    assert all(issubclass(m, ManagedProcess) for m in (RedisServer, NginxProxy, WorkerProcesses))
