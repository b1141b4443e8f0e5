"""The wire inspector: the raw bytes of a streaming response, and when each part arrived.

    capture = inspect_stream(server.url + "/stream", limit=3)
    capture            # a table in JupyterLab, plain text under nbval or in a terminal
    capture.frames[0]  # Frame(at=0.0012, data=b'data: "hello"\\n\\n', complete=True)

TCP may deliver two events in one read or one event in two reads, so the inspector regroups
the bytes before showing them: into *events* (ending at a blank line) for
``text/event-stream``, into *lines* for anything else. Each frame carries the arrival time
of the read that completed it. ``split="chunks"`` shows the reads as they came.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Split = Literal["auto", "events", "lines", "chunks"]

# Headers worth seeing when learning about streams; Date and Server change on every run.
INTERESTING_HEADERS = (
    "content-type",
    "content-length",
    "transfer-encoding",
    "content-disposition",
    "cache-control",
    "x-accel-buffering",
    "connection",
)

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n")


@dataclass(frozen=True)
class Frame:
    """Bytes that arrived, ``at`` seconds after the request was sent."""

    at: float
    data: bytes
    complete: bool = True

    @property
    def ms(self) -> float:
        return self.at * 1000


@dataclass
class WireCapture:
    """What :func:`inspect_stream` saw: status, headers and timed frames."""

    method: str
    target: str
    status_code: int
    reason: str
    headers: dict[str, str]
    frames: list[Frame] = field(default_factory=list)
    stopped_by: str = "end of stream"

    @property
    def body(self) -> bytes:
        return b"".join(f.data for f in self.frames)

    @property
    def times(self) -> list[float]:
        """Arrival times in seconds, one per frame."""
        return [f.at for f in self.frames]

    def _rows(self) -> Iterator[tuple[str, str]]:
        for frame in self.frames:
            note = "" if frame.complete else "  (incomplete)"
            yield f"{frame.ms:6.0f} ms", repr(frame.data) + note

    def render(self) -> str:
        """The capture as plain text, in the line format the course's tests assert on."""
        lines = [f"{self.method} {self.target} -> {self.status_code} {self.reason}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"{'arrived':>9}  bytes")
        lines += [f"{when}  {data}" for when, data in self._rows()]
        lines.append(f"({len(self.frames)} frames, stopped by {self.stopped_by})")
        return "\n".join(lines)

    def show(self) -> None:
        print(self.render())

    def __str__(self) -> str:
        return self.render()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.render())

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(
            f"<div><code>{esc(name)}: {esc(value)}</code></div>"
            for name, value in self.headers.items()
        )
        rows = "".join(
            f"<tr><td style='text-align:right'>{esc(when)}</td>"
            f"<td style='text-align:left'><code>{esc(data)}</code></td></tr>"
            for when, data in self._rows()
        )
        return (
            f"<div><b>{esc(self.method)} {esc(self.target)}</b> &rarr; "
            f"<b>{self.status_code} {esc(self.reason)}</b>{head}"
            f"<table><tr><th>arrived</th><th style='text-align:left'>bytes</th></tr>{rows}</table>"
            f"<small>({len(self.frames)} frames, stopped by {esc(self.stopped_by)})</small></div>"
        )


def split_frames(chunks: list[tuple[float, bytes]], split: Split) -> list[Frame]:
    """Regroup timed reads into frames; see the module docstring."""
    if split == "chunks":
        return [Frame(at, data) for at, data in chunks]
    frames: list[Frame] = []
    pending = b""
    for at, data in chunks:
        pending += data
        while True:
            end = _frame_end(pending, split)
            if end is None:
                break
            frames.append(Frame(at, pending[:end]))
            pending = pending[end:]
    if pending:
        frames.append(Frame(chunks[-1][0], pending, complete=False))
    return frames


def _frame_end(buffer: bytes, split: Split) -> int | None:
    if split == "lines":
        newline = buffer.find(b"\n")
        return None if newline < 0 else newline + 1
    match = _EVENT_END.search(buffer)
    if match is None:
        return None
    # A lone CR at the very end may be the first half of a CRLF still in flight.
    if match.group() == b"\r\r" and match.end() == len(buffer):
        return None
    return match.end()


def inspect_stream(
    url: str,
    method: str = "GET",
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    timeout: float = 10.0,
    split: Split = "auto",
    show_headers: tuple[str, ...] = INTERESTING_HEADERS,
) -> WireCapture:
    """Request ``url`` and record the body's bytes with their arrival times.

    Stops at the end of the body, after ``limit`` frames, or after ``timeout`` seconds
    in all (whichever comes first), so endless streams are safe to inspect.
    """
    chunks: list[tuple[float, bytes]] = []
    stopped_by = "end of stream"
    target = httpx.URL(url)
    shown_target = target.raw_path.decode("ascii")
    with httpx.Client(timeout=httpx.Timeout(timeout)) as client:
        start = time.perf_counter()
        with client.stream(method, url, json=json, headers=headers) as response:
            if split == "auto":
                is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
                split = "events" if is_sse else "lines"
            try:
                for data in response.iter_raw():
                    chunks.append((time.perf_counter() - start, data))
                    if limit is not None and len(split_frames(chunks, split)) >= limit:
                        stopped_by = f"limit={limit}"
                        break
                    if time.perf_counter() - start > timeout:
                        stopped_by = f"timeout={timeout}s"
                        break
            except httpx.ReadTimeout:
                stopped_by = f"timeout={timeout}s"
            except httpx.RemoteProtocolError:
                stopped_by = "connection closed mid-body"
    frames = split_frames(chunks, split)
    if limit is not None:
        frames = frames[:limit]
    return WireCapture(
        method=method.upper(),
        target=shown_target,
        status_code=response.status_code,
        reason=response.reason_phrase,
        headers={k: response.headers[k] for k in show_headers if k in response.headers},
        frames=frames,
        stopped_by=stopped_by,
    )


def inspect_app(app: Any, path: str = "/", method: str = "GET", **options: Any) -> WireCapture:
    """:func:`inspect_stream` for an app that is not running yet: serves it just for this."""
    from course_app.runtime.server import LessonServer

    with LessonServer(app, name="inspector") as server:
        return inspect_stream(server.url + path, method, **options)
