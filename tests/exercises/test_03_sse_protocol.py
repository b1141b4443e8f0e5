"""Lesson 03: format_event(), parse_events() and the /frames stream.

The parsing cases follow the WHATWG "parse an event stream" rules, the ones every browser's
EventSource implements.
"""

from __future__ import annotations

from itertools import pairwise
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

# derandomize: the same examples on every run, so `course check 03` never flips.
PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True)


def _fields(frame: str) -> list[tuple[str, str]]:
    """(field, value) per line of one frame; asserts it ends with exactly one blank line."""
    assert frame.endswith("\n\n"), f"a frame must end with a blank line: {frame!r}"
    lines = frame[:-2].split("\n")
    assert "" not in lines, f"a blank line inside a frame ends the event early: {frame!r}"
    assert "\r" not in frame, f"only LF line ends are expected: {frame!r}"
    pairs = []
    for line in lines:
        field, _, value = line.partition(":")
        pairs.append((field, value.removeprefix(" ")))
    return pairs


def _events(exercise: ModuleType, chunks: list[Any]) -> list[Any]:
    return list(exercise.parse_events(chunks))


def _split(blob: Any, draw: st.DataObject) -> list[Any]:
    """``blob`` cut at a few drawn points: the chunks TCP might deliver."""
    points = draw.draw(st.lists(st.integers(0, len(blob)), max_size=12), label="cuts")
    cuts = [0, *sorted(set(points)), len(blob)]
    return [blob[a:b] for a, b in pairwise(cuts)]


# --- format_event ----------------------------------------------------------------------------


def test_format_simple_data(exercise: ModuleType) -> None:
    """format_event("hello") is one data line and a blank line"""
    assert exercise.format_event("hello") == "data: hello\n\n"


def test_format_all_fields(exercise: ModuleType) -> None:
    """format_event writes event, id, retry and data fields (any order)"""
    frame = exercise.format_event('{"n": 1}', event="tick", id="7", retry=3000)
    assert sorted(_fields(frame)) == [
        ("data", '{"n": 1}'),
        ("event", "tick"),
        ("id", "7"),
        ("retry", "3000"),
    ]


def test_format_multiline_data(exercise: ModuleType) -> None:
    """format_event writes one data line per line of data (LF, CRLF or CR)"""
    cases = [
        ("first\nsecond", ["first", "second"]),
        ("crlf\r\nline ends", ["crlf", "line ends"]),
        ("cr\rline ends", ["cr", "line ends"]),
        ("trailing newline\n", ["trailing newline", ""]),
        ("", [""]),
        (" leading space", [" leading space"]),
    ]
    for data, lines in cases:
        frame = exercise.format_event(data)
        assert _fields(frame) == [("data", line) for line in lines], (
            f"format_event({data!r}) gave {frame!r}"
        )


def test_format_comment(exercise: ModuleType) -> None:
    """format_event(comment=...) writes comment lines, one per line of the comment"""
    frame = exercise.format_event(comment="keep-alive\ndata: not an event")
    assert _fields(frame) == [("", "keep-alive"), ("", "data: not an event")], frame
    # A lone CR ends a line too: "a\rdata: forged" must not smuggle in a data line.
    frame = exercise.format_event(comment="a\rdata: forged")
    assert _events(exercise, [frame]) == [], f"{frame!r} parses as an event"


def _assert_rejected(exercise: ModuleType, bad: list[dict[str, Any]]) -> None:
    for kwargs in bad:
        try:
            frame = exercise.format_event("payload", **kwargs)
        except ValueError:
            continue
        pytest.fail(f"format_event('payload', **{kwargs!r}) returned {frame!r}, not ValueError")


def test_format_rejects_line_ends(exercise: ModuleType) -> None:
    """format_event rejects a CR or LF in event or id (ValueError): no injection"""
    _assert_rejected(
        exercise,
        [
            {"event": "tick\ndata: forged"},
            {"event": "tick\r"},
            {"event": "a\r\nb"},
            {"id": "1\n\ndata: forged"},
            {"id": "1\r"},
        ],
    )


def test_format_rejects_nul_id_and_bad_retry(exercise: ModuleType) -> None:
    """format_event rejects NUL in id, and a retry that is not an int >= 0 (ValueError)"""
    _assert_rejected(exercise, [{"id": "1\x00"}, {"retry": -1}, {"retry": "3000"}, {"retry": 1.5}])


def test_format_accepts_zero_retry(exercise: ModuleType) -> None:
    """format_event accepts retry=0"""
    assert _fields(exercise.format_event(retry=0)) == [("retry", "0")]


# --- parse_events: the spec, rule by rule ----------------------------------------------------
# Each case: (what it shows, the chunks, the expected events as Event keyword arguments).

E = dict
Case = tuple[str, list[Any], list[dict[str, Any]]]


def _assert_cases(exercise: ModuleType, cases: list[Case]) -> None:
    for name, chunks, expected in cases:
        got = _events(exercise, chunks)
        want = [exercise.Event(**event) for event in expected]
        assert got == want, f"{name}: parse_events({chunks!r}) gave {got!r}, expected {want!r}"


def test_parse_dispatch(exercise: ModuleType) -> None:
    """parse_events: data lines, blank-line dispatch, comments, no event without data"""
    _assert_cases(exercise, [
        ("one event", ["data: hello\n\n"], [E(data="hello")]),
        ("two events", ["data: a\n\ndata: b\n\n"], [E(data="a"), E(data="b")]),
        ("multi-line data", ["data: a\ndata: b\n\n"], [E(data="a\nb")]),
        ("only the last LF of data is removed", ["data: a\ndata:\n\n"], [E(data="a\n")]),
        ("comment alone", [": ping\n\n"], []),
        ("comment inside an event", [": hi\ndata: x\n: there\n\n"], [E(data="x")]),
        ("no data, no event", ["event: tick\nid: 1\n\n"], []),
    ])  # fmt: skip


def test_parse_line_ends(exercise: ModuleType) -> None:
    """parse_events: CRLF, CR and LF all end a line"""
    _assert_cases(exercise, [
        ("CRLF line ends", ["data: a\r\ndata: b\r\n\r\n"], [E(data="a\nb")]),
        ("CR line ends", ["data: a\rdata: b\r\r"], [E(data="a\nb")]),
        ("mixed line ends", ["data: a\rdata: b\r\n\ndata: c\n\r\n"],
         [E(data="a\nb"), E(data="c")]),
    ])  # fmt: skip


def test_parse_fields(exercise: ModuleType) -> None:
    """parse_events: field and value split at the first colon, one space removed"""
    _assert_cases(exercise, [
        ("field with no colon", ["data\n\n"], [E(data="")]),
        ("two fields with no colon", ["data\ndata\n\n"], [E(data="\n")]),
        ("no space after the colon", ["data:x\n\n"], [E(data="x")]),
        ("only one space is removed", ["data:  two\n\n"], [E(data=" two")]),
        ("split at the first colon", ["data: a: b\n\n"], [E(data="a: b")]),
        ("unknown field is ignored", ["foo: bar\ndata: a\n\n"], [E(data="a")]),
        ("field names are case-sensitive", ["Data: x\n\n"], []),
    ])  # fmt: skip


def test_parse_bom(exercise: ModuleType) -> None:
    """parse_events strips one byte order mark at the start of the stream only"""
    _assert_cases(exercise, [
        ("leading BOM is stripped", ["\ufeffdata: x\n\n"], [E(data="x")]),
        ("only one BOM is stripped", ["\ufeff\ufeffdata: x\n\n"], []),
        ("a BOM later is data", ["data: \ufeffx\n\n"], [E(data="\ufeffx")]),
        ("a BOM at the start of a later chunk is data", ["data: ", "\ufeffx\n\n"],
         [E(data="\ufeffx")]),
    ])  # fmt: skip


def test_parse_event_type(exercise: ModuleType) -> None:
    """parse_events: event sets the type for one event; default message"""
    _assert_cases(exercise, [
        ("named event", ["event: tick\ndata: 1\n\n"], [E(data="1", event="tick")]),
        ("empty event name", ["event:\ndata: 1\n\n"], [E(data="1")]),
        ("event type resets", ["event: tick\ndata: 1\n\ndata: 2\n\n"],
         [E(data="1", event="tick"), E(data="2")]),
        ("a blank line resets it even with no data", ["event: tick\n\ndata: x\n\n"],
         [E(data="x")]),
    ])  # fmt: skip


def test_parse_id(exercise: ModuleType) -> None:
    """parse_events: the last event ID persists; an id with NUL is ignored"""
    _assert_cases(exercise, [
        ("id persists", ["id: 7\ndata: a\n\ndata: b\n\n"],
         [E(data="a", id="7"), E(data="b", id="7")]),
        ("id set without data persists", ["id: 5\n\ndata: a\n\n"], [E(data="a", id="5")]),
        ("empty id resets", ["id: 7\ndata: a\n\nid\ndata: b\n\n"],
         [E(data="a", id="7"), E(data="b", id="")]),
        ("id with NUL is ignored", ["id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n"],
         [E(data="a", id="1"), E(data="b", id="1")]),
    ])  # fmt: skip


def test_parse_retry(exercise: ModuleType) -> None:
    """parse_events: retry is used only when it is all ASCII digits"""
    _assert_cases(exercise, [
        ("retry", ["retry: 3000\ndata: a\n\n"], [E(data="a", retry=3000)]),
        ("retry persists", ["retry: 3000\n\ndata: a\n\n"], [E(data="a", retry=3000)]),
        ("retry with a unit is ignored", ["retry: 3s\ndata: a\n\n"], [E(data="a")]),
        ("negative retry is ignored", ["retry: -1\ndata: a\n\n"], [E(data="a")]),
        ("retry with a plus is ignored", ["retry: +5\ndata: a\n\n"], [E(data="a")]),
        ("non-ASCII digits are ignored", ["retry: ３０\ndata: a\n\n"], [E(data="a")]),
    ])  # fmt: skip


def test_parse_end_of_stream(exercise: ModuleType) -> None:
    """parse_events drops an event cut off by the end of the stream"""
    _assert_cases(exercise, [
        ("unterminated event is dropped", ["data: a\n\ndata: b\n"], [E(data="a")]),
        ("unterminated line is dropped", ["data: a\n\ndata: b"], [E(data="a")]),
    ])  # fmt: skip


def test_parse_chunk_boundaries(exercise: ModuleType) -> None:
    """parse_events handles chunks cut anywhere: inside a CRLF, a UTF-8 character, a BOM"""
    _assert_cases(exercise, [
        ("CRLF split across chunks", ["data: a\r", "\ndata: b\r", "\n\r", "\n"],
         [E(data="a\nb")]),
        ("empty chunks", ["", "data: a", "", "\n", "", "\n"], [E(data="a")]),
        ("UTF-8 split inside a character", [b"data: \xe2\x82", b"\xac\n\n"], [E(data="€")]),
        ("BOM split across chunks", [b"\xef\xbb", b"\xbfdata: x\n\n"], [E(data="x")]),
        ("bytes with CRLF split", [b"data: a\r", b"\n\r", b"\n"], [E(data="a")]),
    ])  # fmt: skip


def test_parse_is_lazy(exercise: ModuleType) -> None:
    """parse_events yields an event as soon as its blank line arrives"""

    def chunks():  # type: ignore[no-untyped-def]
        yield "data: first\n\n"
        raise AssertionError("parse_events read past the first event before yielding it")

    assert next(iter(exercise.parse_events(chunks()))) == exercise.Event("first")


def test_parse_cr_ends_a_line_at_once(exercise: ModuleType) -> None:
    """a CR at the end of a chunk ends the line at once (no waiting for an LF)"""

    def chunks():  # type: ignore[no-untyped-def]
        yield "data: first\r\r"
        raise AssertionError("parse_events waited for the next chunk after a CR")

    assert next(iter(exercise.parse_events(chunks()))) == exercise.Event("first")


# --- properties: round trips at any chunk boundary --------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
SINGLE_LINE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
NO_NUL_LINE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=12)
RETRY = st.none() | st.integers(min_value=0, max_value=10**9)


def _normalised(data: str) -> str:
    """What a client gets back: every CRLF or CR in data arrives as LF."""
    return data.replace("\r\n", "\n").replace("\r", "\n")


@PROPERTY
@given(data=TEXT, event=st.none() | SINGLE_LINE, id=st.none() | NO_NUL_LINE, retry=RETRY,
       cuts=st.data())  # fmt: skip
def test_round_trip_any_byte_boundaries(
    exercise: ModuleType,
    data: str,
    event: str | None,
    id: str | None,
    retry: int | None,
    cuts: st.DataObject,
) -> None:
    """parse_events(format_event(...)) round-trips any text, cut at any byte"""
    blob = exercise.format_event(data, event=event, id=id, retry=retry).encode("utf-8")
    chunks = _split(blob, cuts)
    expected = exercise.Event(_normalised(data), event or "message", id or "", retry)
    assert _events(exercise, chunks) == [expected]


@PROPERTY
@given(datas=st.lists(TEXT, min_size=1, max_size=4), newline=st.sampled_from(["\n", "\r", "\r\n"]),
       cuts=st.data())  # fmt: skip
def test_round_trip_many_events_any_line_ends(
    exercise: ModuleType, datas: list[str], newline: str, cuts: st.DataObject
) -> None:
    """several events round-trip with LF, CR or CRLF line ends, cut anywhere"""
    text = "".join(exercise.format_event(d) for d in datas).replace("\n", newline)
    chunks = _split(text, cuts)
    assert _events(exercise, chunks) == [exercise.Event(_normalised(d)) for d in datas]


# --- the app ----------------------------------------------------------------------------------


def test_frames_stream(exercise: ModuleType) -> None:
    """GET /frames streams events built by format_event"""
    with TestClient(exercise.app) as client:
        with client.stream("GET", "/frames") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = list(exercise.parse_events(response.iter_bytes()))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("tick", "tick 1", "1"),
        ("tick", "tick 2", "2"),
        ("tick", "tick 3", "3"),
        ("done", "two lines\nof data", "3"),
    ]
    assert {e.retry for e in events} == {3000}
