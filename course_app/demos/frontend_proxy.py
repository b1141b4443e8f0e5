"""A stand-in for a Next.js server in front of a FastAPI stream (lesson 12), in plain Node.

A Next.js app often reaches its Python API through the same origin, in one of two ways:

- ``rewrites()`` in ``next.config.js``: ``next start`` proxies the request with
  ``http-proxy``, which *pipes* the upstream body into the response
  (``packages/next/src/server/lib/router-utils/proxy-request.ts``);
- a Route Handler (``app/api/.../route.ts``) that returns ``new Response(upstream.body)``:
  Next writes each chunk and then calls ``res.flush()``
  (``packages/next/src/server/pipe-readable.ts``).

Either way ``next start`` first applies its ``compress`` option (on by default), the
``compression`` package, to every response: it gzips when the client accepts gzip, the
type is compressible (``text/event-stream`` is) and the response has no
``Cache-Control: no-transform``. A gzip stream that is piped and never flushed holds small
writes until its buffer fills or the body ends; one flushed after every chunk does not.

Installing Next.js (hundreds of megabytes, a build step) is too heavy for a lesson cell,
so this module runs the same mechanism in a few lines of Node with only its built-in
``http`` and ``zlib``: ``/rewrite/<path>`` pipes (like ``rewrites()``), ``/route/<path>``
flushes after every chunk (like a Route Handler), and both apply the compression rules
above. It is a model of Next.js, not Next.js: the lesson says so.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import zlib
from collections.abc import AsyncIterator

import anyio
import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from course_app.services import free_port, parent_death_hook, stop_process_group

NODE_HINT = "install Node.js (Debian/Ubuntu: sudo apt-get install nodejs; macOS: brew install node)"

PROXY_JS = r"""
const http = require('node:http');
const zlib = require('node:zlib');
const [upstreamPort, listenPort] = process.argv.slice(-2).map(Number);

// The rules of the `compression` package, which `next start` applies to every response.
function gzipIt(req, headers) {
  const type = String(headers['content-type'] || '');
  const cacheControl = String(headers['cache-control'] || '');
  return /\bgzip\b/.test(String(req.headers['accept-encoding'] || ''))
    && /^text\/|json/.test(type)                               // compressible types
    && !/(?:^|,)\s*no-transform\s*(?:,|$)/i.test(cacheControl);  // no-transform: hands off
}

http.createServer((req, res) => {
  const mode = req.url.startsWith('/route/') ? 'route' : 'rewrite';
  const path = req.url.replace(/^\/(route|rewrite)(?=\/)/, '');
  const upstream = http.request(
    { host: '127.0.0.1', port: upstreamPort, path, method: req.method,
      headers: { ...req.headers, host: `127.0.0.1:${upstreamPort}` } },
    (up) => {
      const headers = { ...up.headers };
      const gzip = gzipIt(req, headers);
      if (gzip) { delete headers['content-length']; headers['content-encoding'] = 'gzip'; }
      res.writeHead(up.statusCode, headers);
      if (!gzip) { up.pipe(res); return; }
      const zipped = zlib.createGzip();
      zipped.pipe(res);
      if (mode === 'rewrite') { up.pipe(zipped); return; }  // http-proxy: pipe, no flush
      up.on('data', (chunk) => { zipped.write(chunk); zipped.flush(); });  // Route Handler
      up.on('end', () => zipped.end());
    });
  res.on('close', () => upstream.destroy());  // the browser left: stop reading upstream
  upstream.on('error', () => res.destroy());
  req.pipe(upstream);
}).listen(listenPort, '127.0.0.1', () => console.log('listening'));
"""


def create_upstream_app() -> FastAPI:
    """The API behind the proxy: ``/gated`` sends one event, then waits for the gate.

    ``app.state.gate`` (a :class:`threading.Event`, set from the lesson's thread) lets the
    stream send its last event and end. ``?no_transform=1`` adds ``Cache-Control:
    no-cache, no-transform`` to the usual ``no-cache``.
    """
    app = FastAPI(title="Lesson 12: the API behind a frontend server")
    app.state.gate = threading.Event()

    @app.get("/gated")
    async def gated(no_transform: bool = False) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "data: first\n\n"
            # The gate is a thread's Event (the lesson's cells run on another thread).
            await anyio.to_thread.run_sync(app.state.gate.wait, abandon_on_cancel=True)
            yield "data: last\n\n"

        cache = "no-cache, no-transform" if no_transform else "no-cache"
        headers = {"Cache-Control": cache, "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app


def first_event_arrival(
    url: str, gate: threading.Event, *, accept_gzip: bool = True, wait: float = 3.0
) -> tuple[str, str]:
    """When the first event of ``/gated`` reached the client, and the Content-Encoding.

    The gate stays shut until the client has decoded the first event, or for ``wait``
    seconds: if the event came through first, it arrived "while the stream was open";
    if it only came after the gate let the stream end, it arrived "only when the stream
    ended". The verdict depends on the order of things, not on how fast they were.
    """
    gate.clear()
    headers = {"accept-encoding": "gzip" if accept_gzip else "identity"}
    with httpx.Client(timeout=10) as client, client.stream("GET", url, headers=headers) as answer:
        encoding = answer.headers.get("content-encoding", "none")
        decoder = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
        text, gate_was_shut, ended = "", True, False
        reader = answer.iter_raw()

        def next_chunk() -> None:
            nonlocal text, ended
            chunk = next(reader, None)
            if chunk is None:
                ended = True
                return
            text += (decoder.decompress(chunk) if decoder else chunk).decode()

        # Read on a helper thread so that this one can open the gate after `wait`.
        while "data: first" not in text and not ended:
            worker = threading.Thread(target=next_chunk, daemon=True)
            worker.start()
            worker.join(wait if gate_was_shut else 10)
            if worker.is_alive():  # nothing decodable yet: let the stream end
                gate_was_shut = False
                gate.set()
                worker.join(10)
        if "data: first" not in text:
            verdict = "never"
        elif gate_was_shut:
            verdict = "while the stream was open"
        else:
            verdict = "only when the stream ended"
        gate.set()
        for _ in reader:  # read to the end
            pass
    return verdict, encoding


def node_binary() -> str | None:
    """The ``node`` program, if installed."""
    return shutil.which("node")


class FrontendProxy:
    """The Node proxy above, on a free loopback port, in front of ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        node = node_binary()
        if node is None:
            raise RuntimeError(f"Node.js is not installed: {NODE_HINT}")
        self.port = free_port()
        self._process = subprocess.Popen(
            [node, "-e", PROXY_JS, str(upstream_port), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=parent_death_hook(),  # the proxy ends with its starter
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != b"listening":
            self.stop()
            raise RuntimeError("the Node proxy did not start (is the port taken?)")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the proxy (bounded)."""
        if self._process.poll() is None:
            stop_process_group(self._process, grace=2.0)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> FrontendProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_frontend_proxy(upstream_port: int) -> FrontendProxy:
    """Start the Node stand-in for a Next.js server in front of ``upstream_port``."""
    return FrontendProxy(upstream_port)
