"""Lesson 03: the SSE wire format by hand, both ways.

`format_event()` writes one event as text, the way a server must; `parse_events()` reads a
stream of chunks back into events, the way a browser's `EventSource` does (the WHATWG
"parse an event stream" rules). The app at the bottom streams frames built by your
`format_event()`.

Check your work: `course check 03` in a terminal, or the check cell in the notebook.
Stuck? `course hint 03` asks guiding questions about the checks that still fail.
Try it by hand: `course serve 03`, then `curl -N "http://127.0.0.1:8000/frames"`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from course_app.runtime import pace

# One line end: CRLF, a lone CR or a lone LF (the SSE spec accepts all three).
LINE_END = re.compile(r"\r\n|\r|\n")
# Bytes to text, a piece at a time: keeps half a multi-byte character for the next piece.
UTF8Decoder = codecs.getincrementaldecoder("utf-8")


@dataclass(frozen=True)
class Event:
    """One event, as an `EventSource` would dispatch it."""

    data: str
    event: str = "message"  # the event type: addEventListener(event, ...)
    id: str = ""  # the last event ID when this event was dispatched
    retry: int | None = None  # the reconnection time (ms) set so far, if any


def format_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> str:
    """One SSE frame: `field: value` lines, each ending in LF, then a blank line.

    >>> format_event("hello", event="greeting")
    'event: greeting\\ndata: hello\\n\\n'
    """
    # TODO: raise ValueError if `event` or `id` contains a CR or an LF (they would end the
    #       line early and let the rest of the value forge new fields), or if `id`
    #       contains NUL ("\0"); raise ValueError unless `retry` is an int >= 0
    #       (careful: True and False are ints in Python, and "retry: True" is no number).
    # TODO: a comment becomes one ": ..." line per line of the comment.
    # TODO: add "event: ...", "id: ..." and "retry: ..." lines for the fields that are set.
    # TODO: data becomes one "data: ..." line per line; it may contain "\r\n", "\r" or "\n"
    #       (LINE_END.split() splits on all three).
    # TODO: join the lines with "\n" and end the frame with a blank line.
    ### BEGIN SOLUTION
    for name, value in (("event", event), ("id", id)):
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError(f"SSE {name!r} must be a single line, got {value!r}")
    if id is not None and "\0" in id:
        raise ValueError(f"SSE 'id' must not contain NUL, got {id!r}")
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int) or retry < 0):
        raise ValueError(f"SSE 'retry' must be an int >= 0 (milliseconds), got {retry!r}")
    lines: list[str] = []
    if comment is not None:
        lines += [f": {line}" for line in LINE_END.split(comment)]
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    if retry is not None:
        lines.append(f"retry: {retry}")
    if data is not None:
        # "data: " keeps the space: the parser removes exactly one, so " x" survives.
        lines += [f"data: {line}" for line in LINE_END.split(data)]
    return "".join(f"{line}\n" for line in lines) + "\n"
    ### END SOLUTION


def iter_lines(chunks: Iterable[str | bytes]) -> Iterator[str]:
    """The lines of a stream, without their line ends, whatever the chunk boundaries.

    A line that has not ended when the stream ends is dropped (it is incomplete).
    """
    # TODO: decode bytes chunks with ONE decoder, UTF8Decoder(errors="replace"), made before
    #       the loop: a multi-byte character may be split across two chunks, and bytes that
    #       are not UTF-8 become U+FFFD, as in a browser. str chunks are already text.
    # TODO: remove one "\ufeff" (the byte order mark) at the very start of the stream only.
    # TODO: keep the text that has no line end yet, and yield every complete line as soon
    #       as its line end arrives. A CR ends a line at once; if the next chunk then starts
    #       with LF, that LF is the second half of a CRLF: skip it.
    ### BEGIN SOLUTION
    decoder = UTF8Decoder(errors="replace")
    pending = ""
    at_start = True
    skip_lf = False
    for chunk in chunks:
        text = decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not text:
            continue
        if at_start:
            text = text.removeprefix("\ufeff")
            at_start = False
        if skip_lf:
            text = text.removeprefix("\n")
            skip_lf = False
        pending += text
        start = 0
        for match in LINE_END.finditer(pending):
            yield pending[start : match.start()]
            start = match.end()
            # A CR at the very end may be half of a CRLF whose LF is in the next chunk.
            skip_lf = match.group() == "\r" and start == len(pending)
        pending = pending[start:]
    ### END SOLUTION


def parse_events(chunks: Iterable[str | bytes]) -> Iterator[Event]:
    """The events in a stream, as an `EventSource` dispatches them (WHATWG rules)."""
    # TODO: for each line from iter_lines(chunks):
    #       - an empty line dispatches the event (see below);
    #       - a line starting with ":" is a comment: ignore it;
    #       - otherwise split at the FIRST ":" into field and value (no colon: the whole
    #         line is the field and the value is ""); remove ONE leading space of the value.
    # TODO: the fields: "data" appends the value to the data lines; "event" sets the type;
    #       "id" sets the last event ID unless the value contains NUL; "retry" sets the
    #       reconnection time only if the value is all ASCII digits; anything else: ignore.
    # TODO: dispatch: with no data lines, yield nothing; otherwise yield
    #       Event("\n".join(data lines), type or "message", last event ID, retry).
    #       Then forget the data and the type; the ID and the retry carry on.
    ### BEGIN SOLUTION
    data: list[str] = []
    event_type = ""
    last_id = ""
    retry: int | None = None
    for line in iter_lines(chunks):
        if line == "":
            if data:
                yield Event("\n".join(data), event_type or "message", last_id, retry)
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id":
            if "\0" not in value:
                last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                retry = int(value)
    ### END SOLUTION


app = FastAPI(title="Lesson 03: SSE frames by hand")


@app.get("/frames")
async def frames() -> StreamingResponse:
    """A few hand-formatted frames: a comment, named events with ids, multi-line data."""

    async def generate() -> AsyncIterator[str]:
        yield format_event(comment="frames built by format_event()", retry=3000)
        for n in (1, 2, 3):
            yield format_event(f"tick {n}", event="tick", id=str(n))
            await pace.sleep(0.3)
        yield format_event("two lines\nof data", event="done")

    return StreamingResponse(generate(), media_type="text/event-stream")
