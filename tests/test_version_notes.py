"""VERSION_NOTES.md: each entry names the course's pins, its releases fit under them, its
links land on lesson headings, and what it says "your pin" gives you is what the installed
packages do.

A pin bump in pyproject.toml fails `test_every_pin_line_names_the_pinned_version` for each
entry about that package: re-read that package's changelog from the old pin to the new one,
update the entry (and the lesson, if the behaviour moved), then the pin line. The probes
below check the claims that no stored lesson output shows already; the others are shown by
the linked lessons, whose outputs nbval compares on every run.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import tomllib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import httpx2
import httpx_sse
import openai
import pytest
import uvicorn
from fastapi.sse import format_sse_event
from packaging.version import Version
from sse_starlette import sse as sse_starlette_sse
from starlette import testclient as starlette_testclient
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from course_app.checking.field_guide import (
    anchor_is_portable,
    heading_text,
    markdown_headings,
    notebook_anchors,
)
from course_app.runtime import serve

ROOT = Path(__file__).resolve().parents[1]
NOTES_FILE = "VERSION_NOTES.md"

_ITEM = re.compile(r"^- \*\*(?P<label>[^*]+?)\*\*(?P<rest>.*)$")
_RELEASE = re.compile(
    r"\*\*(?P<kind>Before|Since|since|reverted in) (?P<package>[a-z][a-z0-9_-]*) "
    r"(?P<version>\d+(?:\.\d+)+):?\*\*"
)
_PIN = re.compile(r"(?P<package>[a-z][a-z0-9_-]*)==(?P<version>\d+(?:\.\d+)+)")
_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")


@dataclass
class Note:
    """One entry (a `###` heading) of the version notes, with its bullet items."""

    group: str
    title: str
    line: int
    items: list[str] = field(default_factory=list)

    def labelled(self, prefix: str) -> list[str]:
        """The items whose bold label starts with ``prefix``."""
        found = []
        for item in self.items:
            match = _ITEM.match(item)
            if match and match["label"].startswith(prefix):
                found.append(item)
        return found

    def pins(self) -> dict[str, str]:
        """package -> version named by the "Your pin, ...:" item."""
        pins: dict[str, str] = {}
        for item in self.labelled("Your pin,"):
            label = _ITEM.match(item)["label"]  # type: ignore[index]
            pins.update((m["package"], m["version"]) for m in _PIN.finditer(label))
        return pins

    def releases(self) -> list[tuple[str, str, str]]:
        """(kind, package, version) of every release an item names in bold."""
        return [
            (m["kind"], m["package"], m["version"])
            for item in self.items
            for m in _RELEASE.finditer(item)
        ]

    def links(self) -> list[tuple[str, str]]:
        """(text, target) of each link in the "Shown in:" item."""
        return [
            (m["text"], m["target"])
            for item in self.labelled("Shown in:")
            for m in _LINK.finditer(item)
        ]


def parse_notes(text: str) -> list[Note]:
    """The entries of a version-notes text: `## Package`, `### Entry`, `- **Label** ...` items
    that may wrap onto indented lines. Text before the first `##` is the introduction."""
    notes: list[Note] = []
    group = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            group = line[3:].strip()
        elif line.startswith("### "):
            notes.append(Note(group, line[4:].strip(), number))
        elif not notes or not line.strip():
            continue
        elif line.startswith("- "):
            notes[-1].items.append(line.strip())
        elif line.startswith("  ") and notes[-1].items:
            notes[-1].items[-1] += " " + line.strip()
    return notes


def pyproject_pins(root: Path = ROOT) -> dict[str, str]:
    """package -> version for every exact pin in pyproject.toml's dependencies."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition("==")
        pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version.strip()
    return pins


def summary_table(text: str) -> dict[str, str]:
    """package -> pin from the table at the top of the notes."""
    rows = re.findall(r"^\| ([a-z][a-z0-9_-]*) \| (\d+(?:\.\d+)+) \|", text, flags=re.MULTILINE)
    return dict(rows)


# --- the checks, as functions that say what is wrong (so that wrong notes can be tried) ---


def shape_problems(note: Note) -> list[str]:
    """What an entry lacks: a before, a since with a source, one pin line, one shown-in."""
    where = f"{NOTES_FILE} line {note.line} ({note.title!r})"
    problems = []
    if not note.labelled("Before "):
        problems.append(f"{where}: no '- **Before <package> <version>:**' item")
    since = note.labelled("Since ")
    if not since:
        problems.append(f"{where}: no '- **Since <package> <version>**' item")
    for item in since:
        if "https://github.com/" not in item:
            problems.append(
                f"{where}: {item[:60]!r}... cites no pull request, release or changelog link"
            )
    if len(note.labelled("Your pin,")) != 1 or not note.pins():
        problems.append(f"{where}: needs exactly one '- **Your pin, package==version:**' item")
    if len(note.labelled("Shown in:")) != 1 or not note.links():
        problems.append(f"{where}: needs exactly one '- **Shown in:**' item with a link")
    return problems


def pin_problems(note: Note, pins: dict[str, str]) -> list[str]:
    """A pin line that no longer names pyproject.toml's version (or an unpinned package)."""
    problems = []
    for package, version in note.pins().items():
        pinned = pins.get(package)
        if pinned is None:
            problems.append(f"{note.title!r}: {package} is not pinned in pyproject.toml")
        elif pinned != version:
            problems.append(
                f"{note.title!r} was checked against {package}=={version}, but pyproject.toml "
                f"now pins {package}=={pinned}: read {package}'s changelog from {version} to "
                f"{pinned}, re-check the entry (and its lesson), then update its pin line"
            )
    return problems


def release_problems(note: Note) -> list[str]:
    """A release that is not one of the entry's pinned packages, or newer than the pin."""
    pins = note.pins()
    problems = []
    for kind, package, version in note.releases():
        if package not in pins:
            problems.append(
                f"{note.title!r}: '{kind} {package} {version}' names a package the entry's "
                f"pin line does not ({sorted(pins)})"
            )
        elif Version(version) > Version(pins[package]):
            problems.append(
                f"{note.title!r}: '{kind} {package} {version}' is newer than the pin "
                f"{package}=={pins[package]}: the course does not give learners that yet"
            )
    return problems


def link_problems(note: Note, root: Path = ROOT) -> list[str]:
    """A shown-in link that does not land on a lesson heading, or names it wrongly."""
    problems = []
    for text, target in note.links():
        notebook, _, anchor = target.partition("#")
        path = root / notebook
        if not notebook.startswith("notebooks/") or not path.is_file():
            problems.append(f"{note.title!r}: {target}: no notebook {notebook}")
            continue
        anchors = notebook_anchors(path)
        if anchor not in anchors:
            problems.append(
                f"{note.title!r}: {target}: no heading with that anchor in {notebook} "
                f"(renamed?); headings there: {sorted(anchors)}"
            )
            continue
        if not anchor_is_portable(anchor):
            problems.append(f"{note.title!r}: {target}: JupyterLab and GitHub spell it differently")
        number, _, title = text.partition(" · ")
        if not Path(notebook).name.startswith(f"{number}_"):
            problems.append(f"{note.title!r}: {target}: the link text names lesson {number!r}")
        elif heading_text(title) != heading_text(anchors[anchor]):
            problems.append(
                f"{note.title!r}: {target}: the link text says {title!r}, "
                f"the heading is {anchors[anchor]!r}"
            )
    return problems


TEXT = (ROOT / NOTES_FILE).read_text(encoding="utf-8")
NOTES = parse_notes(TEXT)
PINS = pyproject_pins()


def _ids(note: Note) -> str:
    return note.title[:50]


# --- the notes themselves ---------------------------------------------------------------


def test_the_notes_cover_what_issue_23_asks_for() -> None:
    titles = " ".join(note.title for note in NOTES).casefold()
    for topic in [
        "gzip",
        "dependencies with `yield`",
        "fastapi.sse",
        "graceful shutdown",
        "testclient",
        "httpx2",
        "line splitting",
        "content-type",
        "shutdown flag",
    ]:
        assert topic in titles, f"no entry about {topic!r} in {NOTES_FILE}"
    packages = {package for note in NOTES for package in note.pins()}
    assert {"starlette", "fastapi", "uvicorn", "sse-starlette", "httpx-sse", "openai"} <= packages


@pytest.mark.parametrize("note", NOTES, ids=_ids)
def test_every_entry_has_a_before_a_cited_since_a_pin_and_a_lesson(note: Note) -> None:
    assert shape_problems(note) == []


@pytest.mark.parametrize("note", NOTES, ids=_ids)
def test_every_pin_line_names_the_pinned_version(note: Note) -> None:
    assert pin_problems(note, PINS) == []


@pytest.mark.parametrize("note", NOTES, ids=_ids)
def test_every_release_named_is_one_the_pin_includes(note: Note) -> None:
    assert release_problems(note) == []


@pytest.mark.parametrize("note", NOTES, ids=_ids)
def test_every_link_lands_on_a_lesson_heading(note: Note) -> None:
    assert link_problems(note) == []


def test_the_summary_table_lists_the_pins_of_the_entries() -> None:
    table = summary_table(TEXT)
    entries = {package: version for note in NOTES for package, version in note.pins().items()}
    assert table == {package: PINS[package] for package in entries}, (
        f"the table at the top of {NOTES_FILE} says {table}; pyproject.toml pins "
        f"{ {package: PINS[package] for package in entries} }"
    )


def test_the_installed_packages_are_the_pinned_ones() -> None:
    """The "your pin" lines were checked in .venv's sources: they must be the pinned ones."""
    for package in sorted({package for note in NOTES for package in note.pins()}):
        installed = importlib.metadata.version(package)
        assert installed == PINS[package], (
            f"{package} {installed} is installed, pyproject.toml pins {PINS[package]}: "
            "run `make install` (or pip install -e .) before checking the notes"
        )


# --- the checks catch wrong notes ------------------------------------------------------

SAMPLE = """# Notes

## Starlette

### `GZipMiddleware` and `text/event-stream`
- **Before starlette 0.46.0:** compressed.
- **Since starlette 0.46.0** ([#2871](https://github.com/Kludex/starlette/pull/2871)):
  skipped.
- **Your pin, starlette==1.10.0:** skipped.
- **Shown in:** [12 · 2. Compression](notebooks/12_production.ipynb#2.-Compression)
"""


def _sample(old: str = "", new: str = "") -> Note:
    (note,) = parse_notes(SAMPLE.replace(old, new))
    return note


def test_the_sample_passes_every_check() -> None:
    note = _sample()
    assert note.items[1].endswith("): skipped.")  # a continuation line joins its item
    assert shape_problems(note) == []
    assert pin_problems(note, {"starlette": "1.10.0"}) == []
    assert release_problems(note) == []
    assert link_problems(note) == []


def test_a_pin_bump_fails_the_entry_until_it_is_rechecked() -> None:
    (problem,) = pin_problems(_sample(), {"starlette": "1.11.0"})
    assert "now pins starlette==1.11.0" in problem and "changelog" in problem


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("**Since starlette 0.46.0**", "**Since starlette 1.12.0**", "newer than the pin"),
        ("**Before starlette 0.46.0:**", "**Before fastapi 0.46.0:**", "names a package"),
    ],
)
def test_a_release_the_pin_does_not_include_is_reported(old: str, new: str, message: str) -> None:
    (problem,) = release_problems(_sample(old, new))
    assert message in problem


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("([#2871](https://github.com/Kludex/starlette/pull/2871))", "", "cites no"),
        ("- **Before starlette 0.46.0:** compressed.\n", "", "no '- **Before"),
        ("- **Your pin, starlette==1.10.0:** skipped.\n", "", "Your pin"),
        ("- **Shown in:**", "- **Seen in:**", "Shown in"),
    ],
)
def test_an_incomplete_entry_is_reported(old: str, new: str, message: str) -> None:
    problems = shape_problems(_sample(old, new))
    assert any(message in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("#2.-Compression", "#2.-Compress", "renamed?"),
        ("12_production", "12_prod", "no notebook"),
        ("[12 · 2. Compression]", "[11 · 2. Compression]", "names lesson"),
        ("[12 · 2. Compression]", "[12 · Compression]", "the link text says"),
    ],
)
def test_a_wrong_link_is_reported(old: str, new: str, message: str) -> None:
    problems = link_problems(_sample(old, new))
    assert any(message in problem for problem in problems), problems


def test_a_renamed_lesson_heading_breaks_the_link(tmp_path: Path) -> None:
    notebook = json.loads((ROOT / "notebooks/12_production.ipynb").read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = [
                line.replace("## 2. Compression", "## 2. Compressing") for line in cell["source"]
            ]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks/12_production.ipynb").write_text(json.dumps(notebook), "utf-8")
    (problem,) = link_problems(_sample(), tmp_path)
    assert "renamed?" in problem


def test_the_notes_parse_their_own_headings_like_markdown() -> None:
    """`###` lines inside the notes are entries; a `####` or fenced line would be missed."""
    levels = [level for level, _ in markdown_headings(TEXT)]
    assert levels.count(3) == len(NOTES) and 4 not in levels


# --- probes: what the pins give you, where no lesson output shows it --------------------


def _run_asgi(app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    """The messages an ASGI app sends for one GET, without a server."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


def _two_chunks(content_type: bytes) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": b'{"n": 1}\n', "more_body": True})
        await send({"type": "http.response.body", "body": b'{"n": 2}\n', "more_body": False})

    return app


def test_starlette_gzip_skips_event_streams_and_flushes_every_chunk_of_other_streams() -> None:
    """Entry `GZipMiddleware` and `text/event-stream`: 0.46.0's exclusion and 1.5.0's flush."""
    assert "text/event-stream" in DEFAULT_EXCLUDED_CONTENT_TYPES
    accept = [(b"accept-encoding", b"gzip")]
    events = _run_asgi(GZipMiddleware(_two_chunks(b"text/event-stream"), minimum_size=0), accept)
    assert b"content-encoding" not in dict(events[0]["headers"])
    assert events[1]["body"] == b'{"n": 1}\n'

    lines = _run_asgi(GZipMiddleware(_two_chunks(b"application/jsonl"), minimum_size=0), accept)
    assert dict(lines[0]["headers"])[b"content-encoding"] == b"gzip"
    first = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(lines[1]["body"])
    assert first == b'{"n": 1}\n', (
        "the first compressed chunk does not hold the whole first line: GZipMiddleware no "
        "longer flushes each streamed chunk (starlette 1.5.0, #3419)"
    )


def test_starlette_testclient_is_an_httpx2_client() -> None:
    """Entry `TestClient` prefers httpx2 (starlette 1.2.0, #3291)."""
    assert starlette_testclient.httpx is httpx2


def test_uvicorn_speaks_asgi_2_3_so_streaming_response_still_listens_for_disconnects() -> None:
    """Entry `StreamingResponse` listens for the disconnect only below ASGI 2.4 (starlette
    0.42.0, #2732): under uvicorn 0.54 the listener task runs."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope["asgi"]["spec_version"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(app, name="version-notes") as server:
        assert httpx.get(server.url, timeout=30).status_code == 204
    assert seen == ["2.3"], (
        f"uvicorn reports ASGI spec_version {seen}: at 2.4 or later, Starlette's "
        "StreamingResponse stops listening for http.disconnect; update the entry"
    )


def test_fastapi_sse_splits_data_only_at_cr_lf_and_keeps_a_trailing_empty_line() -> None:
    """Entry Native SSE: `fastapi.sse` (0.140.12, #15515). `str.splitlines()` would give
    two data lines for U+2028 and drop the last, empty one."""
    assert format_sse_event(data_str="a\u2028b\n") == "data: a\u2028b\ndata: \n\n".encode()


def test_uvicorn_waits_for_open_streams_forever_by_default() -> None:
    """Entry Graceful shutdown: `timeout_graceful_shutdown` defaults to None (no bound)."""
    assert uvicorn.Config(app=None).timeout_graceful_shutdown is None


def test_sse_starlette_does_not_copy_a_stopped_uvicorns_flag_into_appstatus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entry The process-wide shutdown flag (sse-starlette 3.5.0, #212): the watcher ends on
    a uvicorn server's own `should_exit` but leaves the process-wide flag alone, so the
    next server's streams live on. sse-starlette 3.1.1 to 3.4.x set it (#211)."""

    class StoppedServer:
        should_exit = True

    monkeypatch.setattr(sse_starlette_sse, "_get_uvicorn_server", StoppedServer)
    monkeypatch.setattr(sse_starlette_sse.AppStatus, "should_exit", False)
    monkeypatch.setattr(sse_starlette_sse.AppStatus, "enable_automatic_graceful_drain", True)

    async def watch() -> None:
        await asyncio.wait_for(sse_starlette_sse._shutdown_watcher(), timeout=30)

    asyncio.run(watch())  # returns at its first look: the server has stopped
    assert sse_starlette_sse.AppStatus.should_exit is False, (
        "sse-starlette copied a stopped uvicorn server's should_exit into the process-wide "
        "AppStatus.should_exit: every later server's streams would end at once (#211)"
    )


def _sse_response(body: Iterator[bytes], content_type: str = "text/event-stream") -> httpx.Response:
    class Body(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield from body

    return httpx.Response(200, headers={"content-type": content_type}, stream=Body())


def test_httpx_sse_keeps_u2028_inside_the_data_where_iter_lines_splits() -> None:
    """Entry Line splitting (httpx-sse 0.4.2, #37)."""
    wire = [b'data: {"text": "a\xe2\x80\xa8b"}\n', b"\n"]
    (event,) = httpx_sse.EventSource(_sse_response(iter(wire))).iter_sse()
    assert json.loads(event.data) == {"text": "a\u2028b"}
    assert len(list(_sse_response(iter(wire)).iter_lines())) == 3  # httpx splits at U+2028


def test_httpx_sse_holds_a_line_ending_in_a_lone_cr_until_the_next_byte() -> None:
    """Entry Line splitting: the pin's `SSELineDecoder` cannot yet tell CR from CRLF."""
    decoder = httpx_sse._decoders.SSELineDecoder()
    assert decoder.decode("data: a\r") == []
    assert decoder.decode("\n") == ["data: a"]


def test_httpx_sse_raises_sseerror_with_the_contain_wording_when_iterating() -> None:
    """Entry The Content-Type check (httpx-sse 0.3.0, #12; 0.4.0, #22)."""
    source = httpx_sse.EventSource(_sse_response(iter([b"<html>"]), "text/html"))
    with pytest.raises(httpx_sse.SSEError) as raised:
        next(source.iter_sse())
    assert str(raised.value) == (
        "Expected response header Content-Type to contain 'text/event-stream', got 'text/html'"
    )
    accepted = _sse_response(iter([b"data: x\n\n"]), "text/event-stream; charset=utf-8")
    assert [e.data for e in httpx_sse.EventSource(accepted).iter_sse()] == ["x"]


def test_httpx_sse_does_not_declare_httpx_and_openai_needs_httpx2_not_httpx() -> None:
    """Entries The Content-Type check (depend on httpx yourself) and The SDK runs on httpx2."""
    assert not any(
        re.match(r"httpx\b(?!-|2)", r) for r in importlib.metadata.requires("httpx-sse") or []
    )
    openai_requires = [r.split(";")[0] for r in importlib.metadata.requires("openai") or []]
    assert any(r.startswith("httpx2") for r in openai_requires)
    assert not any(re.match(r"httpx(?![\w-])", r) for r in openai_requires)


def test_openai_holds_an_httpx2_client_and_converts_an_httpx_timeout() -> None:
    """Entry The SDK runs on httpx2 (openai 3.0.0, #3594)."""
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    try:
        assert isinstance(client._client, httpx2.Client)
        converted = openai._httpx2.normalize_httpx2_timeout(httpx.Timeout(10, read=1))
        assert isinstance(converted, httpx2.Timeout) and converted.read == 1
    finally:
        client.close()
