"""A timing and access-log middleware that sees a stream to its end (pure ASGI).

The typical timing middleware, ``@app.middleware("http")`` around ``call_next``, measures
until ``call_next`` returns, which for a stream is when the *headers* are ready: it logs
"200 in 2 ms" for a stream that then runs for an hour, and it cannot tell a finished
stream from one whose client left. Written as plain ASGI, the middleware wraps ``send``
and ``receive`` instead, so it sees every body message and the disconnect, and it adds no
task, no queue and no copy between the app and the server (lesson 12, "Middleware around
a stream")::

    app.add_middleware(StreamTiming, records=timings)   # one StreamRecord per request

Each record is written when the app returns: status, time to the first body byte, total
time, body bytes, and how it ended (``complete``, ``client left``, ``error``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("lesson.stream_timing")


@dataclass
class StreamRecord:
    """What one request's response did, measured from the request's arrival."""

    method: str
    path: str
    status: int | None = None
    first_byte: float | None = None  # seconds until the first non-empty body chunk
    duration: float = 0.0  # seconds until the app returned
    body_bytes: int = 0
    ended: str = "running"  # "complete", "client left" or "error"

    def line(self) -> str:
        """One access-log line (durations in whole milliseconds)."""
        first = "-" if self.first_byte is None else f"{self.first_byte * 1000:.0f} ms"
        return (
            f"{self.method} {self.path} {self.status or '-'} first byte {first}, "
            f"total {self.duration * 1000:.0f} ms, {self.body_bytes} bytes, {self.ended}"
        )


class StreamTiming:
    """Pure ASGI middleware: one :class:`StreamRecord` per HTTP request, when it ends.

    ``records``: a list (or deque) to append to; ``on_record``: a callback, called after
    that. Without either, each record goes to the ``lesson.stream_timing`` logger at INFO.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        records: MutableSequence[StreamRecord] | None = None,
        on_record: Callable[[StreamRecord], None] | None = None,
    ) -> None:
        self.app = app
        self.records = records
        self.on_record = on_record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = StreamRecord(method=scope["method"], path=scope["path"])
        start = time.perf_counter()
        client_left = False

        async def timed_receive() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect":
                client_left = True
            return message

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body and record.first_byte is None:
                    record.first_byte = time.perf_counter() - start
                record.body_bytes += len(body)
                if not message.get("more_body", False):
                    record.ended = "complete"
            await send(message)

        try:
            await self.app(scope, timed_receive, timed_send)
        except BaseException:
            record.ended = "client left" if client_left else "error"
            raise
        finally:
            # A stream the app stopped because its client left returns without a final
            # body message: that is how a record tells "client left" from "complete".
            if record.ended == "running":
                record.ended = "client left" if client_left else "error"
            record.duration = time.perf_counter() - start
            self._write(record)

    def _write(self, record: StreamRecord) -> None:
        if self.records is not None:
            self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)
        if self.records is None and self.on_record is None:
            logger.info("%s", record.line())
