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
    """public/ holds the served files; secret.txt sits next to it, outside."""
    public = tmp_path / "public"
    (public / "sub").mkdir(parents=True)
    (public / "report.txt").write_text("quarterly report\n")
    (public / "sub" / "nested.txt").write_text("nested\n")
    (public / 'résumé "final".txt').write_text("cv\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
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
        "/download/%2e%2e",
        "/download/missing.txt",
        "/download/sub",
        pytest.param("/download/" + "a" * 300, id="/download/<300 letters>"),
    ],
)
def test_nothing_outside_the_folder_is_served(client: TestClient, url: str) -> None:
    """a path outside the folder (.., %2e%2e, a symlink), a non-file or a too-long name is a 404"""
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
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert 'filename="export.csv"' in response.headers["content-disposition"]
        body = response.read().decode()
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed[0] == ["id", "name", "value"]
    assert len(parsed) == 9
    assert all(len(row) == 3 for row in parsed)
    assert client.get("/export.csv", params={"rows": -1}).status_code == 422
