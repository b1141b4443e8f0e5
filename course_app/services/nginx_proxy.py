"""A real nginx in front of a lesson server: Debian's nginx, no root, its files in a temp folder.

    proxy = start_proxy(server, name="12", buffering=True)   # re-running replaces "12"
    httpx.get(proxy.url + "/stream")                          # through nginx
    proxy.reload(buffering=False)    # new config; open streams stay on the old worker
    proxy.restart()                  # stop and start again on the same ports
    proxy.stop()

nginx runs as a child process with a generated ``nginx.conf`` in a temporary folder
(``-p <folder> -c <folder>/nginx.conf -e <folder>/error.log``): its pid file, logs, temp
folders and, for ``http2=True``, a self-signed certificate made with the ``openssl`` command
for 127.0.0.1 all live there and go away with :meth:`NginxProxy.stop`. It listens on free
loopback ports only: plain HTTP/1.1 on :attr:`NginxProxy.url`, and with ``http2=True`` also
TLS + HTTP/2 on :attr:`NginxProxy.https_url`.

Nothing is left behind: a proxy of the same name is stopped before a new one starts, every
proxy is stopped at interpreter exit, and on Linux nginx is told to end if the thread that
started it dies (:mod:`course_app.services.managed_process`; start proxies from a thread
that lives as long as they do, such as a notebook's or a test's main thread).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from course_app.services.child_process import free_port
from course_app.services.managed_process import OUTPUT, ManagedProcess, find_program

NGINX_HINT = "install it: sudo apt-get install nginx"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx")


class NginxError(RuntimeError):
    """nginx could not start, reload or stop; the message says why, in one line."""


class NginxMissing(NginxError):
    """No nginx binary on this machine."""


class _HasPort(Protocol):
    port: int


def nginx_binary() -> str | None:
    """The nginx executable (``$COURSE_NGINX``, then the usual places), or None."""
    return find_program("nginx", "COURSE_NGINX", *NGINX_CANDIDATES)


def nginx_available() -> bool:
    return nginx_binary() is not None


def require_nginx() -> str:
    """The nginx executable, or :class:`NginxMissing` with the one-line install hint."""
    binary = nginx_binary()
    if binary is None:
        raise NginxMissing(f"nginx is not installed: {NGINX_HINT}")
    return binary


@dataclass(frozen=True)
class ProxyOptions:
    """What the generated ``nginx.conf`` says. Times are in seconds."""

    buffering: bool = True  # proxy_buffering (nginx's default: on)
    http_version: str = "1.0"  # proxy_http_version towards the upstream (nginx's default)
    read_timeout: float = 60.0  # proxy_read_timeout: the longest silence from upstream
    send_timeout: float = 60.0  # send_timeout: the longest a client may leave data unread
    http2: bool = False  # also listen with TLS + HTTP/2 (self-signed certificate)
    gzip: bool = False  # gzip text/event-stream too (gzip_types)
    log_query: bool = True  # False: the access log shows the path without ?query
    # keepalive > 0: an `upstream { keepalive N; }` block that keeps up to N idle connections
    # to the app open for reuse. Without it nginx opens a new upstream connection for every
    # request, whatever proxy_http_version and `Connection ""` say. Needs http_version "1.1".
    keepalive: int = 0
    worker_shutdown_timeout: float = 10.0  # how long a reload lets old workers drain
    extra: str = ""  # more directives for the `location /` block


def _duration(seconds: float) -> str:
    """nginx's time syntax: whole seconds as ``60s``, anything else in milliseconds."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def _checked(options: ProxyOptions) -> ProxyOptions:
    """Refuse option sets that nginx would accept but that do not do what they say."""
    if options.keepalive and options.http_version == "1.0":
        raise NginxError(
            "keepalive needs http_version='1.1': nginx closes every HTTP/1.0 upstream "
            "connection after one request"
        )
    return options


def _upstream_address(upstream: str | int | _HasPort) -> str:
    if isinstance(upstream, int):
        return f"127.0.0.1:{upstream}"
    if isinstance(upstream, str):
        return upstream.removeprefix("http://").rstrip("/")
    return f"127.0.0.1:{upstream.port}"


class NginxProxy(ManagedProcess):
    """One nginx master (+ one worker) reverse-proxying to one upstream.

    ``url`` is ``http://127.0.0.1:<port>``: HTTP/1.1 through nginx.
    """

    kind = "nginx proxy"
    folder_prefix = "nginx"
    error = NginxError
    # nginx retries a bind for 2 s itself (5 tries, 500 ms apart): three launches on a
    # kept port that is taken cost 7-8 s and then said the same.
    kept_port_attempts = 1

    def __init__(
        self,
        upstream: str | int | _HasPort,
        *,
        name: str = "nginx",
        startup_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(name=name, startup_timeout=startup_timeout)
        self.upstream = _upstream_address(upstream)
        self.options = _checked(ProxyOptions(**options))
        self.tls_port: int | None = None

    # -- what a lesson reads -------------------------------------------------------------------

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:<port>``: TLS and HTTP/2 (``http2=True`` only)."""
        if self.tls_port is None:
            raise NginxError(f"nginx proxy {self.name!r} has no TLS port: start it with http2=True")
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def certificate(self) -> Path:
        """The self-signed certificate (PEM) that the TLS port presents."""
        if self._dir is None or not (self._dir / "cert.pem").exists():
            raise NginxError(f"nginx proxy {self.name!r} has no certificate: use http2=True")
        return self._dir / "cert.pem"

    @property
    def config(self) -> str:
        """The generated ``nginx.conf``, with the temp folder shown as ``<tmp>``."""
        return self._render(self._dir or Path("<tmp>"), show=True)

    @property
    def location(self) -> str:
        """Just the ``location / { ... }`` block of :attr:`config`: what a lesson changes."""
        text = self.config
        start = text.index("        location / {")
        end = text.index("        }\n", start) + len("        }")
        return "\n".join(line.removeprefix("        ") for line in text[start:end].splitlines())

    def access_log(self) -> list[str]:
        return self._read("access.log")

    def error_log(self) -> list[str]:
        return self._read("error.log")

    # -- the config ----------------------------------------------------------------------------

    def _render(self, folder: Path, *, show: bool = False) -> str:
        o = self.options
        tmp = "<tmp>" if show else str(folder)
        port = self.port or 0
        log_format = (
            '"$request_method $uri $server_protocol"'
            if not o.log_query
            else '"$request"'  # method, path WITH the query string, protocol
        )
        tls = ""
        if o.http2:
            tls = (
                f"        listen 127.0.0.1:{self.tls_port or 0} ssl http2;\n"
                f"        ssl_certificate     {tmp}/cert.pem;\n"
                f"        ssl_certificate_key {tmp}/key.pem;\n"
            )
        gzip = ""
        if o.gzip:
            gzip = (
                "            gzip on;\n"
                "            gzip_types text/event-stream;\n"
                "            gzip_proxied any;\n"
                "            gzip_min_length 0;\n"
            )
        keepalive = (
            '            proxy_set_header Connection "";\n' if o.http_version != "1.0" else ""
        )
        extra = "".join(f"            {line.strip()}\n" for line in o.extra.splitlines() if line)
        target, upstream = self.upstream, ""
        if o.keepalive:
            target = "lesson_app"
            upstream = (
                f"    upstream {target} {{\n"
                f"        server {self.upstream};\n"
                f"        keepalive {o.keepalive};\n"
                "    }\n"
            )
        return f"""\
worker_processes 1;
error_log {tmp}/error.log notice;
worker_shutdown_timeout {_duration(o.worker_shutdown_timeout)};
events {{
    worker_connections 1024;
}}
http {{
    log_format lesson '$status {log_format} $body_bytes_sent bytes';
    access_log {tmp}/access.log lesson;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path       {tmp}/proxy;
    fastcgi_temp_path     {tmp}/fastcgi;
    uwsgi_temp_path       {tmp}/uwsgi;
    scgi_temp_path        {tmp}/scgi;
{upstream}
    server {{
        listen 127.0.0.1:{port};
{tls}
        location / {{
            proxy_pass http://{target};
            proxy_http_version {o.http_version};
{keepalive}            proxy_set_header Host $http_host;
            proxy_buffering {"on" if o.buffering else "off"};
            proxy_read_timeout {_duration(o.read_timeout)};
            send_timeout {_duration(o.send_timeout)};
{gzip}{extra}        }}
    }}
}}
"""

    # -- lifecycle -----------------------------------------------------------------------------

    def _program(self) -> str:
        return require_nginx()

    def _prepare(self) -> None:
        assert self._dir is not None
        if os.geteuid() == 0:
            # As root, nginx's worker runs as `nobody`: let it reach its temp folders.
            self._dir.chmod(0o711)
        if self.options.http2 and not (self._dir / "cert.pem").exists():
            self._make_certificate()

    def _choose_ports(self, fresh: bool) -> None:
        super()._choose_ports(fresh)
        if not self.options.http2:
            self.tls_port = None
        elif fresh or self.tls_port is None:  # restart(http2=True) adds a TLS port
            self.tls_port = free_port()

    def _release_ports(self) -> None:
        super()._release_ports()
        self.tls_port = None

    def _make_certificate(self) -> None:
        assert self._dir is not None
        if shutil.which("openssl") is None:
            raise NginxError("http2=True needs the openssl command: sudo apt-get install openssl")
        command = [
            "openssl", "req", "-x509", "-nodes", "-days", "2",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(self._dir / "key.pem"), "-out", str(self._dir / "cert.pem"),
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NginxError(f"openssl could not make a certificate: {done.stderr.strip()}")

    def _command(self, program: str) -> list[str]:
        assert self._dir is not None
        folder = self._dir
        (folder / "nginx.conf").write_text(self._render(folder))
        for stale in ("error.log", "nginx.pid"):
            (folder / stale).unlink(missing_ok=True)
        return [
            program,
            "-p", f"{folder}/",
            "-c", str(folder / "nginx.conf"),
            "-e", str(folder / "error.log"),
            "-g", f"daemon off; pid {folder}/nginx.pid;",
        ]  # fmt: skip

    def _ready(self) -> bool:
        # nginx writes its pid file once it has bound every port: before that, a port that
        # accepts may be another program's (a port taken since free_port() chose it).
        assert self._dir is not None
        ports = [port for port in (self.port, self.tls_port) if port]
        return (self._dir / "nginx.pid").exists() and all(_accepts(port) for port in ports)

    def _why(self) -> str:
        lines = self.error_log() + self._read(OUTPUT)
        # A taken port: "bind() to ... failed (98: Address already in use)", retried for 2 s,
        # then "still could not bind()", which does not say why.
        serious = [
            line
            for line in lines
            if ("[emerg]" in line or "[alert]" in line) and "still could not bind" not in line
        ]
        last = (serious or lines or ["nginx exited at once"])[-1]
        # The error log says "2026/11/28 08:14:30 [emerg] 3803#3803: the message", the
        # output "nginx: [emerg] the message": keep the message.
        last = re.sub(r"^.*?\[\w+\] (\d+#\d+: )?", "", last)
        return last.replace(str(self._dir), "<tmp>") if self._dir else last

    def reload(self, **changes: Any) -> NginxProxy:
        """Apply new options like ``nginx -s reload``: new connections get the new config.

        Streams already open stay on the old worker until they end or
        ``worker_shutdown_timeout`` runs out; ports cannot change.
        """
        if not self.running or self._dir is None or self._process is None:
            raise NginxError(f"{self.label}: not running")
        new = _checked(replace(self.options, **changes))
        if new.http2 != self.options.http2:
            raise NginxError("http2 cannot change on reload: use restart(http2=...)")
        self.options = new
        before = len(self.error_log())
        (self._dir / "nginx.conf").write_text(self._render(self._dir))
        self._process.send_signal(signal.SIGHUP)
        # The master answers a HUP by starting a new worker (or logging why it cannot), then
        # tells the old one to stop accepting: only then do new connections get the new
        # config. The old worker finishes the requests it has, open streams included.
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            news = self.error_log()[before:]
            if any("[emerg]" in line for line in news):
                raise NginxError(f"{self.label} refused the new config: {self._why()}")
            started = any("start worker process" in line for line in news)
            if started and any("gracefully shutting down" in line for line in news):
                return self
            time.sleep(0.01)
        raise NginxError(f"{self.label} did not reload within {self.startup_timeout} s")

    def restart(self, **changes: Any) -> NginxProxy:
        """Stop nginx (open connections are cut) and start it again on the same ports."""
        if changes:
            self.options = _checked(replace(self.options, **changes))
        return super().restart()

    def _summary(self) -> str:
        if not self.running:
            return "stopped"
        extra = f" and {self.https_url} (HTTP/2)" if self.tls_port else ""
        return f"{self.url}{extra} -> {self.upstream}"


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_proxy(
    upstream: str | int | _HasPort, *, name: str = "nginx", **options: Any
) -> NginxProxy:
    """Start nginx in front of ``upstream``; replaces any running proxy called ``name``.

    ``upstream`` is a lesson server, a port, or ``"127.0.0.1:<port>"``. Options: see
    :class:`ProxyOptions`. Raises :class:`NginxMissing` ("install it: sudo apt-get install
    nginx") where nginx is not installed.
    """
    return NginxProxy(upstream, name=name, **options).start()


def running_proxies() -> list[NginxProxy]:
    return NginxProxy.running_ones()


def stop_all_proxies() -> None:
    """Stop every nginx this process started (done at interpreter exit too)."""
    NginxProxy.stop_all()


__all__ = [
    "NGINX_HINT",
    "NginxError",
    "NginxMissing",
    "NginxProxy",
    "ProxyOptions",
    "nginx_available",
    "require_nginx",
    "running_proxies",
    "start_proxy",
    "stop_all_proxies",
]
