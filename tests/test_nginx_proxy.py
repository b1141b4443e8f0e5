"""The nginx helper: a real nginx in front of a lesson server, that never outlives its use."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from course_app.runtime import LessonServer, inspect_stream
from course_app.services import (
    NGINX_HINT,
    NginxError,
    NginxMissing,
    NginxProxy,
    running_proxies,
    start_proxy,
)
from course_app.services import nginx_available as _nginx_available
from tests.unavailable import unavailable


@pytest.fixture(scope="module", autouse=True)
def nginx_installed() -> None:
    if not _nginx_available():
        message = f"these tests need nginx: {NGINX_HINT}"
        unavailable(message)


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/client-port")
    async def client_port(request: Request) -> int:
        """The source port of the connection this request came on (nginx's, behind nginx)."""
        assert request.client is not None
        return request.client.port

    @app.get("/ticks")
    async def ticks(n: int = 5, gap: float = 0.05, quiet: float = 0.0) -> StreamingResponse:
        async def frames() -> AsyncIterator[str]:
            for i in range(n):
                yield f"id: {i}\ndata: {i}\n\n"
                await asyncio.sleep(gap)
            await asyncio.sleep(quiet)
            yield "data: after the silence\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[LessonServer]:
    with LessonServer(make_app(), name="t-nginx") as running:
        yield running


def nginx_pids() -> set[int]:
    done = subprocess.run(["pgrep", "-x", "nginx"], capture_output=True, text=True, check=False)
    return {int(pid) for pid in done.stdout.split()}


def test_proxies_and_stops_leaving_nothing_behind(server: LessonServer) -> None:
    before = nginx_pids()
    with NginxProxy(server, name="t-basic") as proxy:
        url = proxy.url
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/hello").json() == {"hello": "world"}
        assert nginx_pids() - before, "nginx should be running"
        folder = proxy.config  # the config shows <tmp>, never the machine's path
        assert "<tmp>/access.log" in folder
        assert '200 "GET /hello HTTP/1.1"' in logged(proxy)[-1]
    assert not proxy.running and repr(proxy) == "<NginxProxy 't-basic' stopped>"
    assert nginx_pids() - before == set(), "nginx (master or worker) was left running"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/hello", timeout=1)
    with pytest.raises(NginxError, match=r"^nginx proxy 't-basic': not running$"):
        proxy.url  # noqa: B018 - a stopped proxy has no address to hand out


def test_same_name_replaces_the_previous_proxy(server: LessonServer) -> None:
    first = start_proxy(server, name="t-replace")
    second = start_proxy(server, name="t-replace")
    try:
        assert not first.running
        assert [p for p in running_proxies() if p.name == "t-replace"] == [second]
    finally:
        second.stop()


def test_buffering_on_holds_small_events_until_the_end(server: LessonServer) -> None:
    with NginxProxy(server, name="t-buffer") as proxy:  # nginx's defaults: buffering on
        held = inspect_stream(proxy.url + "/ticks?n=5&gap=0.1")
        proxy.reload(buffering=False)
        streamed = inspect_stream(proxy.url + "/ticks?n=5&gap=0.1")
    assert len(held.frames) == len(streamed.frames) == 6
    # Buffered, the ~60-byte body fits one buffer: it all came in one read, at the end.
    assert len(set(held.times)) == 1
    assert len(set(streamed.times)) > 1


def test_read_timeout_cuts_a_quiet_stream(server: LessonServer) -> None:
    with NginxProxy(server, name="t-timeout", buffering=False, read_timeout=0.3) as proxy:
        capture = inspect_stream(proxy.url + "/ticks?n=1&quiet=1")
        log = proxy.error_log()
    assert capture.stopped_by == "connection closed mid-body"
    assert any("upstream timed out" in line for line in log)


def test_restart_keeps_the_port_and_cuts_open_streams(server: LessonServer) -> None:
    with NginxProxy(server, name="t-restart", buffering=False) as proxy:
        port = proxy.port
        with httpx.Client(timeout=5) as client:
            with client.stream("GET", proxy.url + "/ticks?n=1000&gap=0.01") as response:
                lines = response.iter_lines()
                assert next(lines) == "id: 0"
                proxy.restart()
                with pytest.raises(httpx.RemoteProtocolError):
                    for _ in lines:
                        pass
        assert proxy.port == port
        assert httpx.get(proxy.url + "/hello").status_code == 200


def test_reload_keeps_open_streams_on_the_old_worker(server: LessonServer) -> None:
    with NginxProxy(server, name="t-reload", buffering=False) as proxy:
        with httpx.Client(timeout=5) as client:
            with client.stream("GET", proxy.url + "/ticks?n=30&gap=0.01") as response:
                lines = response.iter_lines()
                assert next(lines) == "id: 0"
                proxy.reload(read_timeout=5)
                data = [line for line in lines if line.startswith("data:")]
        assert data[-1] == "data: after the silence"
        assert "proxy_read_timeout 5s;" in proxy.config


def test_http2_with_a_generated_certificate(server: LessonServer) -> None:
    with NginxProxy(server, name="t-h2", http2=True) as proxy:
        assert proxy.https_url.startswith("https://127.0.0.1:")
        assert proxy.certificate.read_text().startswith("-----BEGIN CERTIFICATE-----")
        # httpx speaks HTTP/1.1 here (no h2 package): the TLS port serves that too.
        trust = ssl.create_default_context(cafile=str(proxy.certificate))
        answer = httpx.get(proxy.https_url + "/hello", verify=trust)
        assert answer.json() == {"hello": "world"}


def logged(proxy: NginxProxy, lines: int = 1) -> list[str]:
    """The access log once it has ``lines`` lines: nginx writes a line after the response
    is sent, so a client can have its answer a moment before the line is there."""
    deadline = time.monotonic() + 5
    while len(log := proxy.access_log()) < lines and time.monotonic() < deadline:
        time.sleep(0.01)
    return log


def test_access_log_can_leave_the_query_out(server: LessonServer) -> None:
    with NginxProxy(server, name="t-log", log_query=False) as proxy:
        httpx.get(proxy.url + "/hello?token=secret")
        assert logged(proxy) == ['200 "GET /hello HTTP/1.1" 17 bytes']


def upstream_ports(proxy: NginxProxy, requests: int = 3) -> list[int]:
    """The source port nginx used towards the app for each of ``requests`` requests."""
    with httpx.Client(timeout=10) as client:  # one client connection to nginx for all of them
        return [client.get(proxy.url + "/client-port").json() for _ in range(requests)]


def test_http11_alone_opens_a_new_upstream_connection_per_request(server: LessonServer) -> None:
    """`proxy_http_version 1.1` + `Connection ""` without an upstream keepalive block: one
    connection to the app per request (lesson 12's sample config used to call this keep-alive)."""
    with NginxProxy(server, name="t-no-keepalive", http_version="1.1") as proxy:
        assert 'proxy_set_header Connection "";' in proxy.config
        assert "keepalive" not in proxy.config
        ports = upstream_ports(proxy)
    assert len(set(ports)) == 3, f"upstream source ports: {ports}"


def test_upstream_keepalive_reuses_the_connection_to_the_app(server: LessonServer) -> None:
    with NginxProxy(server, name="t-keepalive", http_version="1.1", keepalive=8) as proxy:
        assert "upstream lesson_app {" in proxy.config
        assert "keepalive 8;" in proxy.config
        assert "proxy_pass http://lesson_app;" in proxy.config
        ports = upstream_ports(proxy)
    # All three normally share one port. Not `== 1`: the lesson server closes a connection
    # idle for 1 s, and a stall that long between two requests on a loaded machine would
    # make nginx open a second one. Any reuse at all is what an unkept pool never shows.
    assert len(set(ports)) < 3, f"upstream source ports: {ports}"


def test_keepalive_without_http11_is_refused(server: LessonServer) -> None:
    with pytest.raises(NginxError, match=r"^keepalive needs http_version='1.1'"):
        NginxProxy(server, name="t-keepalive-10", keepalive=8)


def test_bad_config_is_a_one_line_error(server: LessonServer) -> None:
    with pytest.raises(NginxError, match=r'unknown directive "bogus" in <tmp>/nginx.conf:\d+$'):
        start_proxy(server, name="t-bad", extra="bogus on;")
    assert "t-bad" not in [p.name for p in running_proxies()]


def test_a_port_taken_since_it_was_chosen_is_retried_on_a_fresh_one(server: LessonServer) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()  # accepts connections: only nginx's own word says it is ready
        taken = holder.getsockname()[1]
        ports = iter([taken])

        class Unlucky(NginxProxy):
            def _choose_ports(self, fresh: bool) -> None:
                super()._choose_ports(fresh)
                self.port = next(ports, self.port)

        with Unlucky(server, name="t-unlucky") as proxy:
            assert proxy.port != taken, "nginx was taken as ready on another program's port"
            assert httpx.get(proxy.url + "/hello").json() == {"hello": "world"}


def test_a_taken_port_on_restart_is_a_one_line_error(server: LessonServer) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        proxy = NginxProxy(server, name="t-busy")
        proxy.port = taken  # as on a restart: the port is fixed
        try:
            with pytest.raises(NginxError) as caught:
                proxy.start()
        finally:
            proxy.stop()
    assert str(caught.value) == (
        f"nginx proxy 't-busy' failed to start: bind() to 127.0.0.1:{taken}"
        " failed (98: Address already in use)"
    )


def test_missing_nginx_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_NGINX", "/nonexistent/nginx")
    with pytest.raises(
        NginxMissing, match=r"^nginx is not installed: install it: sudo apt-get install nginx$"
    ):
        start_proxy(8000, name="t-missing")
