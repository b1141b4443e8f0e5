"""Lesson 02: a per-user file share (confinement, Content-Disposition, chunks) and a CSV listing."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, unquote

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """users/ is the base folder: one folder per user, and traps around them.

    anna/ is the trap for a string-prefix check (its path starts with ann's); mallory/ is a
    user folder that is a symlink out of users/; secret.txt and outside/ are outside users/.
    """
    users = tmp_path / "users"
    ann = users / "ann"
    (ann / "notes").mkdir(parents=True)
    (ann / "report.txt").write_text("quarterly report\n")
    (ann / "notes" / "todo.txt").write_text("nested\n")
    (ann / 'résumé "final".txt').write_text("cv\n")
    (users / "anna").mkdir()
    (users / "anna" / "secret.txt").write_text("ANNA'S SECRET\n")
    (users / "bob").mkdir()
    for name in ("with, comma.txt", 'say "hi".txt', "two\nlines.txt"):
        (users / "bob" / name).write_text("x" * len(name))
    (users / "readme.txt").write_text("not a user\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("OUTSIDE SECRET\n")
    os.symlink(tmp_path / "secret.txt", ann / "link-to-secret.txt")
    os.symlink(users / "anna" / "secret.txt", ann / "link-to-anna.txt")
    os.symlink(tmp_path / "outside", users / "mallory")
    return users


@pytest.fixture
def client(exercise: ModuleType, files: Path) -> TestClient:
    return TestClient(exercise.create_app(files))


# --- downloads: confinement ------------------------------------------------------------


def test_download_streams_a_file(client: TestClient) -> None:
    """GET /users/ann/files/report.txt returns ann's file as an attachment

    Which folder does user_file() look in for user "ann", and what must it return for a
    plain file there? The route is given: once user_file() returns the right Path, the
    headers follow from content_disposition() and stat().
    """
    response = client.get("/users/ann/files/report.txt")
    assert response.status_code == 200
    assert response.content == b"quarterly report\n"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-length"] == str(len(b"quarterly report\n"))


def test_download_in_a_subfolder(client: TestClient) -> None:
    """files in subfolders of a user's folder can be downloaded (notes/todo.txt)

    The name "notes/todo.txt" holds a slash: is it still inside ann's folder once
    resolved? Make sure your malformed-name check does not refuse every "/".
    """
    assert client.get("/users/ann/files/notes/todo.txt").content == b"nested\n"


def _wrong_answers(client: TestClient, expected: dict[str, set[int]]) -> str:
    """Each URL whose status is not one of those expected, or whose body holds a secret."""
    wrong = []
    for url, statuses in expected.items():
        shown = re.sub(r"(.)\1{20,}", lambda m: f"<{len(m[0])} x {m[1]}>", url)
        try:
            response = client.get(url)
        except NotImplementedError:
            raise
        except Exception as exc:  # the route raised: a 500 for a real client
            wrong.append(f"{shown} -> raised {type(exc).__name__}: {str(exc)[:60]}")
            continue
        if response.status_code not in statuses or b"SECRET" in response.content:
            wrong.append(f"{shown} -> {response.status_code} {response.text[:40]!r}")
    return "\n".join(wrong)


LONG_NAME = "a" * 300


def test_only_the_users_own_files_are_served(client: TestClient) -> None:
    """a name that leaves the user's folder (.., a symlink, the sibling anna/), a missing file or a folder is a 404

    Do you check the resolved path against the user's own resolved folder, or only
    against base_dir? Does your check compare whole path components
    (Path.is_relative_to) or characters ("/users/anna" starts with "/users/ann")?
    resolve() follows symlinks: check the path it returns, not the one you built. A name
    too long for the file system raises OSError: where do you catch it?
    """
    urls = [
        "/users/ann/files/..%2F..%2Fsecret.txt",  # out of base_dir
        "/users/ann/files/%2e%2e/%2e%2e/secret.txt",
        "/users/ann/files/notes%2F..%2F..%2Fbob%2Fsay%20%22hi%22.txt",  # bob's file
        "/users/ann/files/..%2Freadme.txt",  # in base_dir, not in ann's folder
        "/users/ann/files/..%2Fanna%2Fsecret.txt",  # "/users/anna" starts with "/users/ann"
        "/users/ann/files/link-to-secret.txt",  # a symlink out of base_dir
        "/users/ann/files/link-to-anna.txt",  # a symlink into anna's folder
        "/users/ann/files/missing.txt",
        "/users/ann/files/notes",  # a folder, not a file
        "/users/ann/files/%2e%2e",
        f"/users/ann/files/{LONG_NAME}",  # too long for the file system: OSError
    ]
    wrong = _wrong_answers(client, {url: {404} for url in urls})
    if wrong:
        pytest.fail(f"expected a 404 without a secret:\n{wrong}")


def test_the_user_must_be_a_folder_inside_the_base(client: TestClient) -> None:
    """a user that is not a folder inside the base (.., ., a symlink out, a file, missing) gets nothing

    The user part is a path too: where do base_dir / ".." and base_dir / "." resolve to?
    mallory/ is a symlink to a folder outside base_dir: what does resolve() make of it?
    Is your user's folder a directory, inside the resolved base_dir, and not base_dir
    itself?
    """
    expected = {
        "/users/mallory/files/secret.txt": {404},  # mallory/ is a symlink out of base_dir
        "/users/nobody/files/report.txt": {404},
        "/users/readme.txt/files/x": {404},  # a file, not a folder
        "/users/%2e%2e/files/secret.txt": {400, 404},  # the user ".."
        "/users/%2e/files/anna%2Fsecret.txt": {400, 404},  # the user "."
        f"/users/{LONG_NAME}/files/x": {404},
    }
    wrong = _wrong_answers(client, expected)
    if wrong:
        pytest.fail(f"expected a 404 (or a 400 for . and ..) without a secret:\n{wrong}")


def test_malformed_names_are_400(client: TestClient) -> None:
    """a malformed user or file name (absolute, NUL, backslash) is a 400

    Which checks come before any path is built, and do they apply to the user as well as
    to the name? Is the HTTPException raised before the StreamingResponse is returned?
    """
    urls = [
        "/users/ann/files/%2Fetc%2Fpasswd",
        "/users/ann/files/a%00b",
        "/users/ann/files/..%5C..%5Csecret.txt",
        "/users/a%00b/files/report.txt",
        "/users/ann%5C..%5Canna/files/secret.txt",
    ]
    wrong = _wrong_answers(client, {url: {400} for url in urls})
    if wrong:
        pytest.fail(f"expected a 400:\n{wrong}")


# --- Content-Disposition ---------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*;\s*({_TOKEN})=("(?:[^"\\\r\n]|\\.)*"|{_TOKEN})')


def _disposition_params(header: str) -> tuple[str, list[tuple[str, str]]]:
    """The disposition type and its (name, raw value) parameters, as a strict parser sees them."""
    kind = re.match(_TOKEN, header)
    assert kind, f"no disposition type at the start of {header!r}"
    params, pos = [], kind.end()
    while pos < len(header):
        match = _PARAM.match(header, pos)
        if not match:  # e.g. a '"' in the name ended the quoted filename early
            raise AssertionError(f"a header parser stops at {header[pos:]!r} in {header!r}")
        params.append((match[1].lower(), match[2]))
        pos = match.end()
    return kind[0], params


def test_content_disposition_format(exercise: ModuleType) -> None:
    """content_disposition gives attachment; filename="<ASCII>"; filename*=UTF-8''<exact name>

    Two parameters, in that order: a quoted ASCII fallback, then the UTF-8 name
    percent-encoded. Compare your string with the expected one character by character:
    spaces after ";", the quotes, the two apostrophes after UTF-8.
    """
    header = exercise.content_disposition('résumé "final".txt')
    assert header == (
        'attachment; filename="resume _final_.txt"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt"
    )


def test_fallback_is_readable_ascii(exercise: ModuleType) -> None:
    """the ASCII filename keeps the base letter of accented characters (é -> e) and replaces the rest with _

    What does unicodedata.normalize("NFKD", "é") return, character by character? Which of
    those characters does unicodedata.combining() flag? A character with no ASCII base
    letter (a CJK character, a quote, a backslash) becomes one "_".
    """
    expected = {
        "report.txt": "report.txt",
        "crème brûlée.txt": "creme brulee.txt",
        "Ångström.pdf": "Angstrom.pdf",
        "日本.txt": "__.txt",
        'back\\slash "q".txt': "back_slash _q_.txt",
    }
    wrong = []
    for name, fallback in expected.items():
        _, params = _disposition_params(exercise.content_disposition(name))
        if dict(params).get("filename") != f'"{fallback}"':
            wrong.append(
                f'{name!r}: filename={dict(params).get("filename")}, expected "{fallback}"'
            )
    if wrong:
        pytest.fail("\n".join(wrong))


HOSTILE_NAMES = [
    "report.txt; filename*=UTF-8''evil.html",
    'say "hi"; x=y.txt',
    "two\r\nlines.txt",
    "tab\there.txt",
    "100% ~done~.txt",
    "日本.txt",
]


def test_a_name_cannot_inject_parameters(exercise: ModuleType) -> None:
    """a hostile name (; filename*=..., quotes, CR/LF) cannot add a parameter to the header

    Inside the quoted fallback, which characters could end the quoted string early, and
    what do you turn them into? In filename*, does every ";", "'", "=", space and
    non-ASCII byte come out percent-encoded (urllib.parse.quote's `safe` argument)?
    """
    for name in HOSTILE_NAMES:
        header = exercise.content_disposition(name)
        assert "\r" not in header and "\n" not in header, f"a line break in {header!r}"
        kind, params = _disposition_params(header)
        assert kind == "attachment", header
        assert [key for key, _ in params] == ["filename", "filename*"], (
            f"{name!r} gave the parameters {params}"
        )
        fallback, encoded = params[0][1], params[1][1]
        assert re.fullmatch(r'"[ !#-\[\]-~]*"', fallback), f"not printable ASCII: {fallback}"
        assert encoded.startswith("UTF-8''"), encoded
        assert re.fullmatch(r"[A-Za-z0-9\-._~%]*", encoded[7:]), f"not all encoded: {encoded}"
        assert unquote(encoded[7:], errors="strict") == name


def test_download_header_for_an_unusual_name(client: TestClient) -> None:
    """the download route sends the quoted Content-Disposition for ann's 'résumé "final".txt'

    If content_disposition() passes its own checks, does user_file() find this file? Its
    name has a space, quotes and accents: percent-decoded by the server before your code
    sees it.
    """
    response = client.get("/users/ann/files/" + quote('résumé "final".txt'))
    assert response.status_code == 200
    assert (
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt"
        in response.headers["content-disposition"]
    )


# --- chunked reads ---------------------------------------------------------------------


def test_large_file_is_read_in_chunks(exercise: ModuleType, tmp_path: Path) -> None:
    """read_chunks reads a 3 MB file in pieces of at most chunk_size bytes

    Does your loop stop when read() returns b"", and not before? With chunk_size=64 KiB,
    3 MB + 123 bytes is 48 full chunks and one short one.
    """
    big = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 123)
    big.write_bytes(data)
    chunks = list(exercise.read_chunks(big, chunk_size=64 * 1024))
    assert b"".join(chunks) == data
    assert len(chunks) == 49
    assert max(len(c) for c in chunks) == 64 * 1024


class _ReadRecorder:
    """A binary file that records the size of every read asked of it."""

    def __init__(self, file: io.BufferedReader) -> None:
        self._file = file
        self.sizes: list[int | None] = []

    def __enter__(self) -> _ReadRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()

    def close(self) -> None:
        self._file.close()

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return self._file.read(size)

    def read1(self, size: int = -1) -> bytes:
        self.sizes.append(size)
        return self._file.read1(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        self.sizes.append(len(buffer))
        return self._file.readinto(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        self.sizes.append(None)  # reads up to a newline: unbounded in a binary file
        return self._file.readline(size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        self.sizes.append(None)
        return self._file.readlines(hint)

    def __iter__(self) -> _ReadRecorder:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


@pytest.fixture
def recorded(
    exercise: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Callable[[bytes], Path], list[_ReadRecorder]]:
    """A maker of files whose opened copies (path.open() or open(path)) record every read."""
    opened: list[_ReadRecorder] = []

    def recording_open(file: object, mode: str = "r", *args: object, **kwargs: object):
        recorder = _ReadRecorder(open(file, mode, *args, **kwargs))
        opened.append(recorder)
        return recorder

    class RecordingPath(type(Path())):  # type: ignore[misc]  # PosixPath or WindowsPath
        def open(self, mode: str = "r", *args: object, **kwargs: object):  # type: ignore[override]
            return recording_open(self, mode, *args, **kwargs)

    def make(data: bytes) -> Path:
        (tmp_path / "big.bin").write_bytes(data)
        return RecordingPath(tmp_path / "big.bin")

    monkeypatch.setattr(exercise, "open", recording_open, raising=False)
    return make, opened


def test_read_chunks_never_reads_more_than_a_chunk(
    exercise: ModuleType, recorded: tuple[Callable[[bytes], Path], list[_ReadRecorder]]
) -> None:
    """read_chunks never asks the file for more than chunk_size bytes (no whole-file read())

    What does f.read() with no size (or -1) read? Iterating over a binary file reads up
    to the next b"\\n", however far that is: read(chunk_size) in a loop instead. Is the
    first chunk yielded after one read, not after the whole file?
    """
    make, opened = recorded
    chunk_size = 4096
    data = os.urandom(10 * chunk_size + 5)
    big = make(data)

    chunks = exercise.read_chunks(big, chunk_size=chunk_size)
    first = next(chunks)
    assert opened, "open the file with path.open('rb') or open(path, 'rb')"
    sizes = opened[0].sizes
    assert len(sizes) == 1, f"one read before the first chunk, not {len(sizes)}: {sizes}"
    received = first + b"".join(chunks)
    assert received == data
    assert all(size is not None and 0 <= size <= chunk_size for size in sizes), (
        f"reads asked for {sorted(set(sizes), key=str)}: f.read() with no size "
        f"(or -1) loads the whole file; ask for at most chunk_size={chunk_size}"
    )


def test_read_chunks_stops_at_the_limit(
    exercise: ModuleType, recorded: tuple[Callable[[bytes], Path], list[_ReadRecorder]]
) -> None:
    """read_chunks(path, chunk_size, limit) yields the first `limit` bytes and asks the file for no more

    How many bytes are still missing before each read? Ask for the smaller of that and
    chunk_size, and stop once nothing is missing, rather than reading a whole chunk and
    cutting it. A 100-byte preview of a 2 GB file should read 100 bytes.
    """
    make, opened = recorded
    data = os.urandom(10 * 4096 + 5)
    big = make(data)
    for limit in (100, 2 * 4096 + 100, 3 * 4096):
        received = b"".join(exercise.read_chunks(big, chunk_size=4096, limit=limit))
        assert received == data[:limit], f"limit={limit}: got {len(received)} bytes"
        sizes = opened[-1].sizes
        assert all(size is not None and 0 <= size <= 4096 for size in sizes), sizes
        assert sum(sizes) <= limit, f"limit={limit}: reads asked for {sizes}"


def test_limit_beyond_the_end_is_the_whole_file(exercise: ModuleType, tmp_path: Path) -> None:
    """a limit larger than the file yields the whole file, once

    When the file ends before the limit is reached, what does read() return, and does
    your loop stop on it?
    """
    data = os.urandom(5000)
    (tmp_path / "small.bin").write_bytes(data)
    assert b"".join(exercise.read_chunks(tmp_path / "small.bin", 1024, limit=10**9)) == data


def test_head_sends_the_first_bytes(client: TestClient, files: Path) -> None:
    """GET ...?head=1000 sends the first 1000 bytes with Content-Length 1000; head=0 is a 422

    The route passes head to read_chunks as limit: does your read_chunks honour it? With
    head larger than the file, the whole file comes back.
    """
    data = os.urandom(200_000)
    (files / "ann" / "big.bin").write_bytes(data)
    response = client.get("/users/ann/files/big.bin", params={"head": 1000})
    assert response.status_code == 200
    assert response.content == data[:1000], f"head=1000 sent {len(response.content)} bytes"
    assert response.headers["content-length"] == "1000"
    whole = client.get("/users/ann/files/big.bin", params={"head": 10**6})
    assert whole.content == data, f"head=10**6 sent {len(whole.content)} of {len(data)} bytes"
    assert client.get("/users/ann/files/big.bin", params={"head": 0}).status_code == 422


def test_large_download_is_complete(client: TestClient, files: Path) -> None:
    """a 3 MB download arrives whole

    Every chunk, in order, the last short one included: does anything in your
    read_chunks stop early or skip a chunk when no limit is given?
    """
    data = os.urandom(3 * 1024 * 1024)
    (files / "ann" / "big.bin").write_bytes(data)
    with client.stream("GET", "/users/ann/files/big.bin") as response:
        received = b"".join(response.iter_bytes())
    assert response.status_code == 200
    assert received == data


# --- the CSV listing -------------------------------------------------------------------

RECORDS = [
    {"user": "bob", "path": "with, comma.txt", "size": 10, "owner_id": 7},
    {"user": "bob", "path": 'say "hi".txt', "size": 20, "owner_id": 7},
    {"user": "bob", "path": "two\nlines.txt", "size": 30, "owner_id": 7},
]


def test_csv_rows_quote_awkward_values(exercise: ModuleType) -> None:
    """csv_rows writes the chosen fields, in order, quoting commas, quotes and newlines

    Are you writing through the csv module (not an f-string or ",".join)? Are the
    columns those of `fields`, in that order, with any other keys of a record left out?
    One yielded string per line: the header, then one per record.
    """
    lines = list(exercise.csv_rows(iter(RECORDS), ["path", "size"]))
    assert len(lines) == 4, "one string per line: the header, then one per record"
    parsed = list(csv.reader(io.StringIO("".join(lines))))
    assert parsed == [["path", "size"]] + [[r["path"], str(r["size"])] for r in RECORDS]


def test_csv_rows_header_comes_first(exercise: ModuleType) -> None:
    """csv_rows yields the header before it has looked at any record

    Does anything before your first yield touch `records`: list(records), a
    len(), or a loop that starts before the header is yielded?
    """

    def records():
        raise AssertionError("records were read before the header was sent")
        yield

    assert next(exercise.csv_rows(records(), ["user", "size"])) == "user,size\r\n"


def test_csv_rows_pulls_one_record_per_line(exercise: ModuleType) -> None:
    """csv_rows takes one record from its source per line it yields (never all of them first)

    The source may be millions of records long. Do you iterate over it directly,
    writing and yielding each record before pulling the next, and empty the buffer
    after each line so it never grows?
    """
    pulled = 0

    def records():
        nonlocal pulled
        for record in RECORDS:
            pulled += 1
            yield record

    lines = exercise.csv_rows(records(), ["user"])
    next(lines)  # the header
    assert next(lines) == "bob\r\n"
    assert pulled == 1, f"{pulled} records were pulled to write the first line"
    assert next(lines) == "bob\r\n", "empty the buffer after each line"


def test_files_csv_endpoint(client: TestClient) -> None:
    """GET /files.csv?fields=path&fields=user streams every user's files, those columns in that order

    The route is given: it passes list_files(base_dir) and the requested fields to your
    csv_rows, and content_disposition("files.csv") as the header. Does the CSV parse
    back with a csv.reader? Are file names with commas, quotes and line breaks one value?
    """
    with client.stream("GET", "/files.csv", params={"fields": ["path", "user"]}) as response:
        body = response.read().decode()  # first, so an error in the route surfaces here
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="files.csv"' in response.headers["content-disposition"]
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed[0] == ["path", "user"]
    assert sorted(parsed[1:]) == sorted(
        [
            ["notes/todo.txt", "ann"],
            ["report.txt", "ann"],
            ['résumé "final".txt', "ann"],
            ["secret.txt", "anna"],
            ['say "hi".txt', "bob"],
            ["two\nlines.txt", "bob"],
            ["with, comma.txt", "bob"],
        ]
    )
    assert client.get("/files.csv", params={"fields": "owner"}).status_code == 422


def test_files_csv_default_columns(client: TestClient) -> None:
    """GET /files.csv with no fields gives user, path and size

    With no fields the route asks csv_rows for all three columns: are the sizes the
    numbers from the records, written as text by the csv module?
    """
    with client.stream("GET", "/files.csv") as response:
        body = response.read().decode()
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed[0] == ["user", "path", "size"]
    assert ["bob", "two\nlines.txt", str(len("two\nlines.txt"))] in parsed
