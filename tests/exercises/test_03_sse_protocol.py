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
    """format_event("hello") is one data line and a blank line

    Which field name goes in front of the text, and what separates it from the value? What
    tells a client that the event is complete?
    """
    assert exercise.format_event("hello") == "data: hello\n\n"


def test_format_all_fields(exercise: ModuleType) -> None:
    """format_event writes event, id, retry and data fields (any order)

    Every keyword that is not None becomes its own `name: value` line. Which fields does
    your function skip when they are set, and how does the int retry become text?
    """
    frame = exercise.format_event('{"n": 1}', event="tick", id="7", retry=3000)
    assert sorted(_fields(frame)) == [
        ("data", '{"n": 1}'),
        ("event", "tick"),
        ("id", "7"),
        ("retry", "3000"),
    ]


def test_format_multiline_data(exercise: ModuleType) -> None:
    """format_event writes one data line per line of data (LF, CRLF or CR)

    A line end inside data would end the `data:` line early. How do you split the text on
    CRLF, CR and LF alike? What should "" or a text ending in a newline give, so that the
    client gets exactly the same text back?
    """
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
    """format_event(comment=...) writes comment lines, one per line of the comment

    A comment line starts with a colon. If a comment holding a line end went out as one
    line, what would its second line be to a client? Is a lone CR a line end too?
    """
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
    """format_event rejects a CR or LF in event or id (ValueError): no injection

    What would the text after a newline in `event` become on the wire? Check for both CR
    and LF before writing anything, and raise rather than quietly clean the value.
    """
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
    """format_event rejects NUL in id, and a retry that is not an int >= 0 (ValueError)

    Which check applies to `id` only? For `retry`: what types are "3000" and 1.5, and would
    a browser accept `retry: -1` or `retry: 1.5` (only ASCII digits count)?
    """
    _assert_rejected(exercise, [{"id": "1\x00"}, {"retry": -1}, {"retry": "3000"}, {"retry": 1.5}])


def test_format_rejects_bool_retry(exercise: ModuleType) -> None:
    """format_event rejects retry=True or False (ValueError): a bool is no retry time

    What does `isinstance(True, int)` give in Python? What would `retry: True` on the wire
    mean to a browser?
    """
    _assert_rejected(exercise, [{"retry": True}, {"retry": False}])


def test_format_accepts_zero_retry(exercise: ModuleType) -> None:
    """format_event accepts retry=0

    0 is a valid retry: reconnect at once. Is 0 true or false in an `if`? How do you tell
    "retry was not given" apart from 0?
    """
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
    """parse_events: data lines, blank-line dispatch, comments, no event without data

    What do you keep from line to line while an event is being built? When the blank line
    comes and no data line was seen, what happens? Joining data lines with a newline: how
    many newlines does the event end up with for `data: a`, `data:`?
    """
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
    """parse_events: CRLF, CR and LF all end a line

    Do you split on LF only? A lone CR ends a line too, and a CRLF is one line end, not a
    line end followed by an empty line.
    """
    _assert_cases(exercise, [
        ("CRLF line ends", ["data: a\r\ndata: b\r\n\r\n"], [E(data="a\nb")]),
        ("CR line ends", ["data: a\rdata: b\r\r"], [E(data="a\nb")]),
        ("mixed line ends", ["data: a\rdata: b\r\n\ndata: c\n\r\n"],
         [E(data="a\nb"), E(data="c")]),
    ])  # fmt: skip


def test_parse_fields(exercise: ModuleType) -> None:
    """parse_events: field and value split at the first colon, one space removed

    Do you split at every colon or only the first? How many spaces does the spec remove
    after it: all of them, or one? What field and value does a line with no colon give?
    Are field names compared case by case?
    """
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
    """parse_events strips one byte order mark at the start of the stream only

    Where is U+FEFF removed: from every chunk, every line, or only the very start of the
    stream, and how many of them? An empty chunk (or one that decodes to nothing yet) is
    not the start of the text.
    """
    _assert_cases(exercise, [
        ("leading BOM is stripped", ["\ufeffdata: x\n\n"], [E(data="x")]),
        ("only one BOM is stripped", ["\ufeff\ufeffdata: x\n\n"], []),
        ("a BOM later is data", ["data: \ufeffx\n\n"], [E(data="\ufeffx")]),
        ("a BOM at the start of a later chunk is data", ["data: ", "\ufeffx\n\n"],
         [E(data="\ufeffx")]),
    ])  # fmt: skip


def test_parse_event_type(exercise: ModuleType) -> None:
    """parse_events: event sets the type for one event; default message

    What is the type when no `event` line came, or an empty one? When do you forget the
    type: after a dispatched event only, or after every blank line?
    """
    _assert_cases(exercise, [
        ("named event", ["event: tick\ndata: 1\n\n"], [E(data="1", event="tick")]),
        ("empty event name", ["event:\ndata: 1\n\n"], [E(data="1")]),
        ("event type resets", ["event: tick\ndata: 1\n\ndata: 2\n\n"],
         [E(data="1", event="tick"), E(data="2")]),
        ("a blank line resets it even with no data", ["event: tick\n\ndata: x\n\n"],
         [E(data="x")]),
    ])  # fmt: skip


def test_parse_id(exercise: ModuleType) -> None:
    """parse_events: the last event ID persists; an id with NUL is ignored

    Do you reset the ID after a dispatch, as you do data and type? It must carry on. What
    does `id` with an empty value do, and `id` with a NUL in it?
    """
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
    """parse_events: retry is used only when it is all ASCII digits

    Which strings does `int()` accept that the spec ignores (`+5`, `-1`, " 7")? Does
    `str.isdigit()` accept digits that are not ASCII, like full-width ones? Does retry
    carry on to later events?
    """
    _assert_cases(exercise, [
        ("retry", ["retry: 3000\ndata: a\n\n"], [E(data="a", retry=3000)]),
        ("retry persists", ["retry: 3000\n\ndata: a\n\n"], [E(data="a", retry=3000)]),
        ("retry with a unit is ignored", ["retry: 3s\ndata: a\n\n"], [E(data="a")]),
        ("negative retry is ignored", ["retry: -1\ndata: a\n\n"], [E(data="a")]),
        ("retry with a plus is ignored", ["retry: +5\ndata: a\n\n"], [E(data="a")]),
        ("non-ASCII digits are ignored", ["retry: ３０\ndata: a\n\n"], [E(data="a")]),
    ])  # fmt: skip


def test_parse_end_of_stream(exercise: ModuleType) -> None:
    """parse_events drops an event cut off by the end of the stream

    When the chunks run out, what happens to text still waiting for its line end, and to an
    event still waiting for its blank line? A browser drops both: no dispatch at the end.
    """
    _assert_cases(exercise, [
        ("unterminated event is dropped", ["data: a\n\ndata: b\n"], [E(data="a")]),
        ("unterminated line is dropped", ["data: a\n\ndata: b"], [E(data="a")]),
    ])  # fmt: skip


def test_parse_chunk_boundaries(exercise: ModuleType) -> None:
    """parse_events handles chunks cut anywhere: inside a CRLF, a UTF-8 character, a BOM

    What must survive from one chunk to the next: text with no line end yet, half a UTF-8
    character (one decoder for the whole stream), a CR whose LF may open the next chunk?
    """
    _assert_cases(exercise, [
        ("CRLF split across chunks", ["data: a\r", "\ndata: b\r", "\n\r", "\n"],
         [E(data="a\nb")]),
        ("empty chunks", ["", "data: a", "", "\n", "", "\n"], [E(data="a")]),
        ("UTF-8 split inside a character", [b"data: \xe2\x82", b"\xac\n\n"], [E(data="€")]),
        ("BOM split across chunks", [b"\xef\xbb", b"\xbfdata: x\n\n"], [E(data="x")]),
        ("bytes with CRLF split", [b"data: a\r", b"\n\r", b"\n"], [E(data="a")]),
    ])  # fmt: skip


def test_parse_invalid_utf8(exercise: ModuleType) -> None:
    """parse_events turns bytes that are not UTF-8 into U+FFFD, even split across chunks

    What does your decoder do with the byte 0xFF: raise, drop it, or replace it? A browser
    replaces it with U+FFFD and goes on. Which `errors=` setting does that, and is the
    same decoder used for the whole stream?
    """
    _assert_cases(exercise, [
        ("invalid byte", [b"data: \xff\n\n"], [E(data="\ufffd")]),
        ("invalid byte, then text", [b"data: a\xffb\n\n"], [E(data="a\ufffdb")]),
        ("a character cut short by a line end", [b"data: a\xe2\x82", b"\n\n"],
         [E(data="a\ufffd")]),
        ("a bad sequence split across chunks", [b"data: a\xe2", b"\x82b\n\n"],
         [E(data="a\ufffdb")]),
        ("the events after it still arrive", [b"data: \xff\n\ndata: ok\n\n"],
         [E(data="\ufffd"), E(data="ok")]),
    ])  # fmt: skip


def test_parse_is_lazy(exercise: ModuleType) -> None:
    """parse_events yields an event as soon as its blank line arrives

    Does any step (decoding, splitting lines, parsing) collect the whole stream in a list
    or a string before it yields? Each step can be a generator that yields inside its loop.
    """

    def chunks():  # type: ignore[no-untyped-def]
        yield "data: first\n\n"
        raise AssertionError("parse_events read past the first event before yielding it")

    assert next(iter(exercise.parse_events(chunks()))) == exercise.Event("first")


def test_parse_cr_ends_a_line_at_once(exercise: ModuleType) -> None:
    """a CR at the end of a chunk ends the line at once (no waiting for an LF)

    After a chunk that ends in CR, do you hold the line back to see whether an LF follows?
    End the line now; what must you remember about the start of the next chunk?
    """

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


# The @given functions live inside the tests: Hypothesis prints a failing example's
# arguments, and the `exercise` module among them would show a path on this machine.


@pytest.mark.own_session  # a long search: runs beside the others
def test_round_trip_any_byte_boundaries(exercise: ModuleType) -> None:
    """parse_events(format_event(...)) round-trips any text, cut at any byte

    Run the failing example from the message by hand: format, encode, cut, parse. Is a
    space at the start of data kept? A CR or CRLF in data? A cut inside a character?
    """

    @PROPERTY
    @given(data=TEXT, event=st.none() | SINGLE_LINE, id=st.none() | NO_NUL_LINE, retry=RETRY,
           cuts=st.data())  # fmt: skip
    def round_trip(
        data: str, event: str | None, id: str | None, retry: int | None, cuts: st.DataObject
    ) -> None:
        blob = exercise.format_event(data, event=event, id=id, retry=retry).encode("utf-8")
        chunks = _split(blob, cuts)
        expected = exercise.Event(_normalised(data), event or "message", id or "", retry)
        assert _events(exercise, chunks) == [expected]

    round_trip()


@pytest.mark.own_session  # a long search: runs beside the others
def test_round_trip_many_events_any_line_ends(exercise: ModuleType) -> None:
    """several events round-trip with LF, CR or CRLF line ends, cut anywhere

    With CR line ends, a frame ends in two CRs: do both lines end without a later chunk?
    With a CRLF cut between its CR and LF, does your parser see an extra empty line?
    """

    @PROPERTY
    @given(datas=st.lists(TEXT, min_size=1, max_size=4),
           newline=st.sampled_from(["\n", "\r", "\r\n"]), cuts=st.data())  # fmt: skip
    def round_trip(datas: list[str], newline: str, cuts: st.DataObject) -> None:
        text = "".join(exercise.format_event(d) for d in datas).replace("\n", newline)
        chunks = _split(text, cuts)
        assert _events(exercise, chunks) == [exercise.Event(_normalised(d)) for d in datas]

    round_trip()


# --- the app ----------------------------------------------------------------------------------


def test_frames_stream(exercise: ModuleType) -> None:
    """GET /frames streams events built by format_event

    The app is written for you: it passes once format_event and parse_events do. Which
    other checks still fail? Fix those first.
    """
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
