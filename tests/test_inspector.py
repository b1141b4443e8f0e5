"""The wire inspector: framing of timed reads, and a capture of a real stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from course_app.runtime import Frame, LessonServer, inspect_app, inspect_stream, split_frames


def test_events_are_regrouped_across_reads() -> None:
    reads = [(0.1, b"data: a\n"), (0.2, b"\ndata: b\n\nda"), (0.3, b"ta: c\n\n")]
    assert split_frames(reads, "events") == [
        Frame(0.2, b"data: a\n\n"),
        Frame(0.2, b"data: b\n\n"),
        Frame(0.3, b"data: c\n\n"),
    ]


def test_crlf_and_cr_line_ends_end_events() -> None:
    reads = [(0.1, b"data: a\r\n\r\ndata: b\r\rdata: c\n\n")]
    assert [f.data for f in split_frames(reads, "events")] == [
        b"data: a\r\n\r\n",
        b"data: b\r\r",
        b"data: c\n\n",
    ]


def test_a_cr_at_the_end_of_a_read_waits_for_its_lf() -> None:
    reads = [(0.1, b"data: a\r\n\r"), (0.2, b"\ndata: b\r\n\r\n")]
    assert split_frames(reads, "events") == [
        Frame(0.2, b"data: a\r\n\r\n"),
        Frame(0.2, b"data: b\r\n\r\n"),
    ]


def test_unfinished_tail_is_marked_incomplete() -> None:
    frames = split_frames([(0.1, b"a\nb")], "lines")
    assert frames == [Frame(0.1, b"a\n"), Frame(0.1, b"b", complete=False)]


def test_chunks_are_kept_as_read() -> None:
    reads = [(0.1, b"data: a\n"), (0.2, b"\n")]
    assert split_frames(reads, "chunks") == [Frame(0.1, b"data: a\n"), Frame(0.2, b"\n")]


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/csv")
    async def csv() -> StreamingResponse:
        async def rows() -> AsyncIterator[str]:
            for i in range(3):
                yield f"{i},item\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(rows(), media_type="text/csv")

    @app.get("/endless")
    async def endless() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            while True:
                yield "data: tick\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_inspect_a_finite_text_stream_by_lines() -> None:
    capture = inspect_app(_app(), "/csv")
    assert capture.status_code == 200
    assert [f.data for f in capture.frames] == [b"0,item\n", b"1,item\n", b"2,item\n"]
    assert capture.times == sorted(capture.times)
    assert capture.stopped_by == "end of stream"
    text = capture.render()
    assert text.splitlines()[0] == "GET /csv -> 200 OK"
    assert "content-type: text/csv; charset=utf-8" in text
    assert "b'0,item\\n'" in text


def test_inspect_an_endless_stream_stops_at_the_limit() -> None:
    with LessonServer(_app(), name="t-inspector") as server:
        capture = inspect_stream(server.url + "/endless", limit=3)
        assert [f.data for f in capture.frames] == [b"data: tick\n\n"] * 3
        assert capture.stopped_by == "limit=3"
        timed = inspect_stream(server.url + "/endless", timeout=0.2)
        assert timed.stopped_by == "timeout=0.2s"
        assert timed.frames


def test_html_rendering_escapes_bytes() -> None:
    capture = inspect_app(_app(), "/csv")
    html = capture._repr_html_()
    assert "<table>" in html and "&#x27;" in html
