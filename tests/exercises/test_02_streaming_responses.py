"""Lesson 02: safe downloads (path traversal, Content-Disposition, chunks) and CSV export."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """public/ holds the served files; secret.txt and public-old/ sit next to it, outside.

    public-old/ is the trap for a string-prefix check: its path starts with public's.
    """
    public = tmp_path / "public"
    (public / "sub").mkdir(parents=True)
    (public / "report.txt").write_text("quarterly report\n")
    (public / "sub" / "nested.txt").write_text("nested\n")
    (public / 'résumé "final".txt').write_text("cv\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    (tmp_path / "public-old").mkdir()
    (tmp_path / "public-old" / "secret.txt").write_text("OLD SECRET\n")
    os.symlink(tmp_path / "secret.txt", public / "link-to-secret.txt")
    return public


@pytest.fixture
def client(exercise: ModuleType, files: Path) -> TestClient:
    return TestClient(exercise.create_app(files))


def test_download_streams_a_file(client: TestClient) -> None:
    """GET /download/report.txt returns the file as an attachment"""
    response = client.get("/download/report.txt")
    assert response.status_code == 200
    assert response.content == b"quarterly report\n"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-length"] == str(len(b"quarterly report\n"))


def test_download_in_a_subfolder(client: TestClient) -> None:
    """files in subfolders of the base folder can be downloaded"""
    assert client.get("/download/sub/nested.txt").content == b"nested\n"


@pytest.mark.parametrize(
    "url",
    [
        "/download/..%2Fsecret.txt",
        "/download/%2e%2e/secret.txt",
        "/download/%2e%2e%2fsecret.txt",
        "/download/sub%2F..%2F..%2Fsecret.txt",
        "/download/link-to-secret.txt",
        "/download/..%2Fpublic-old%2Fsecret.txt",
        "/download/%2e%2e",
        "/download/missing.txt",
        "/download/sub",
        pytest.param("/download/" + "a" * 300, id="/download/<300 letters>"),
    ],
)
def test_nothing_outside_the_folder_is_served(client: TestClient, url: str) -> None:
    """a path outside the folder (.., %2e%2e, a symlink, a sibling public-old/), a non-file or a too-long name is a 404"""
    response = client.get(url)
    assert response.status_code == 404
    assert b"SECRET" not in response.content


@pytest.mark.parametrize(
    "url", ["/download/%2Fetc%2Fpasswd", "/download/a%00b", "/download/..%5Csecret.txt"]
)
def test_malformed_names_are_400(client: TestClient, url: str) -> None:
    """a malformed name (absolute, NUL, backslash) is a 400"""
    assert client.get(url).status_code == 400


def test_content_disposition_quotes_the_name(exercise: ModuleType) -> None:
    """Content-Disposition has an ASCII fallback and the exact UTF-8 name"""
    header = exercise.content_disposition('résumé "final".txt')
    assert header == (
        'attachment; filename="r_sum_ _final_.txt"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt"
    )


def test_download_header_for_an_unusual_name(client: TestClient) -> None:
    """the download route sends the quoted Content-Disposition"""
    response = client.get("/download/r%C3%A9sum%C3%A9%20%22final%22.txt")
    assert response.status_code == 200
    assert (
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt"
        in response.headers["content-disposition"]
    )


def test_large_file_is_read_in_chunks(exercise: ModuleType, tmp_path: Path) -> None:
    """read_chunks reads a 3 MB file in pieces of at most chunk_size bytes"""
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


def test_read_chunks_never_reads_more_than_a_chunk(
    exercise: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_chunks never asks the file for more than chunk_size bytes (no whole-file read())"""
    opened: list[_ReadRecorder] = []

    def recording_open(file: object, mode: str = "r", *args: object, **kwargs: object):
        recorder = _ReadRecorder(open(file, mode, *args, **kwargs))
        opened.append(recorder)
        return recorder

    class RecordingPath(type(Path())):  # type: ignore[misc]  # PosixPath or WindowsPath
        def open(self, mode: str = "r", *args: object, **kwargs: object):  # type: ignore[override]
            return recording_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(exercise, "open", recording_open, raising=False)
    chunk_size = 4096
    data = os.urandom(10 * chunk_size + 5)
    (tmp_path / "big.bin").write_bytes(data)
    big = RecordingPath(tmp_path / "big.bin")

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


def test_large_download_is_complete(exercise: ModuleType, tmp_path: Path) -> None:
    """a 3 MB download arrives whole"""
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    with TestClient(exercise.create_app(tmp_path)) as client:
        with client.stream("GET", "/download/big.bin") as response:
            received = b"".join(response.iter_bytes())
    assert received == data


def test_csv_lines_quote_awkward_values(exercise: ModuleType) -> None:
    """csv_lines quotes commas, quotes and newlines so the CSV parses back"""
    rows = [(1, "with, comma", 10), (2, 'with "quotes"', 20), (3, "two\nlines", 30)]
    lines = list(exercise.csv_lines(("id", "name", "value"), rows))
    assert len(lines) == 4, "one string per row, header first"
    parsed = list(csv.reader(io.StringIO("".join(lines))))
    assert parsed == [["id", "name", "value"]] + [[str(a), b, str(c)] for a, b, c in rows]


def test_csv_lines_is_lazy(exercise: ModuleType) -> None:
    """csv_lines yields the header before it has looked at any row"""

    def rows():
        raise AssertionError("rows were read before the header was sent")
        yield

    assert next(exercise.csv_lines(("id",), rows())) == "id\r\n"


def test_export_csv_endpoint(client: TestClient) -> None:
    """GET /export.csv?rows=8 streams a valid CSV attachment; rows=-1 is a 422"""
    with client.stream("GET", "/export.csv", params={"rows": 8}) as response:
        body = response.read().decode()  # first, so an error in the route surfaces here
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="export.csv"' in response.headers["content-disposition"]
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed[0] == ["id", "name", "value"]
    assert len(parsed) == 9
    assert all(len(row) == 3 for row in parsed)
    assert client.get("/export.csv", params={"rows": -1}).status_code == 422
