"""Lesson 02: a safe streaming download and a CSV export.

`GET /download/{name}` streams a file from one folder, and only from that folder.
`GET /export.csv` streams a CSV export row by row, quoted by the `csv` module.

Check your work: `course check 02` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 02`, then
`curl -N "http://127.0.0.1:8000/export.csv?rows=5"` and
`curl -OJ "http://127.0.0.1:8000/download/00_welcome.ipynb"` (the app serves notebooks/).
"""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import StreamingResponse

CHUNK_SIZE = 64 * 1024


def safe_path(base_dir: Path, name: str) -> Path:
    """The regular file ``name`` inside ``base_dir``; HTTPException 400 or 404 otherwise."""
    # TODO: raise HTTPException(400) for a malformed name: empty, absolute (starts with
    #       "/"), or containing a NUL ("\0") or a backslash.
    # TODO: resolve base_dir and base_dir / name (resolve() follows symlinks and "..").
    #       Unless the result is inside the resolved base_dir (Path.is_relative_to) AND is
    #       a regular file, raise HTTPException(404): say nothing about what exists outside.
    #       (Not a string prefix check: "/srv/public-old/x" starts with "/srv/public".)
    #       The file system may refuse a name (OSError, e.g. too long): that is a 404 too.
    ### BEGIN SOLUTION
    if not name or name.startswith("/") or "\0" in name or "\\" in name:
        raise HTTPException(status_code=400, detail="invalid file name")
    base = base_dir.resolve()
    try:
        candidate = (base / name).resolve()
        found = candidate.is_relative_to(base) and candidate.is_file()
    except OSError:  # e.g. a name longer than the file system allows
        found = False
    if not found:
        raise HTTPException(status_code=404, detail="file not found")
    return candidate
    ### END SOLUTION


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` and an exact UTF-8 ``filename*`` (RFC 6266)."""
    # TODO: the fallback `filename="..."` may only hold printable ASCII without `"` or `\`:
    #       replace every other character with "_".
    # TODO: add `filename*=UTF-8''<name>` with the exact name percent-encoded:
    #       urllib.parse.quote(filename, safe="").
    ### BEGIN SOLUTION
    fallback = "".join(
        ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
    ### END SOLUTION


def read_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The file's bytes, ``chunk_size`` at a time: never the whole file in memory."""
    # TODO: open the file in binary mode in a `with` block and yield f.read(chunk_size)
    #       until it returns b"". Never f.read() without a size: that is the whole file.
    ### BEGIN SOLUTION
    with path.open("rb") as file:
        while chunk := file.read(chunk_size):
            yield chunk
    ### END SOLUTION


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterator[str]:
    """The header, then each row, one CSV line at a time, quoted by the ``csv`` module."""
    # TODO: write each row (header first) with ONE csv.writer over an io.StringIO buffer,
    #       yield the buffer's text, then empty it (seek(0) and truncate(0)).
    #       Never join values with f-strings: a comma, quote or newline in a value breaks
    #       the file.
    ### BEGIN SOLUTION
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in chain([header], rows):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate(0)
    ### END SOLUTION


HEADER = ("id", "name", "value")


def demo_rows(count: int) -> Iterator[tuple[int, str, int]]:
    """Rows whose names need quoting: commas, quotes and a line break."""
    names = ("plain", "with, comma", 'with "quotes"', "two\nlines")
    for i in range(count):
        yield i, f"item {i} {names[i % len(names)]}", i * 10


def create_app(base_dir: Path) -> FastAPI:
    app = FastAPI(title="Lesson 02: streaming responses")

    # A sync route: FastAPI runs it (safe_path's resolve(), stat()) in a worker thread and
    # Starlette iterates its sync generator in worker threads, so no file call blocks the
    # event loop.
    @app.get("/download/{name:path}")
    def download(name: str) -> StreamingResponse:
        path = safe_path(base_dir, name)
        return StreamingResponse(
            read_chunks(path),
            media_type="application/octet-stream",
            headers={
                "content-disposition": content_disposition(path.name),
                "content-length": str(path.stat().st_size),
            },
        )

    @app.get("/export.csv")
    def export_csv(rows: Annotated[int, Query(ge=0, le=100_000)] = 1000) -> StreamingResponse:
        return StreamingResponse(
            csv_lines(HEADER, demo_rows(rows)),
            media_type="text/csv",
            headers={"content-disposition": content_disposition("export.csv")},
        )

    return app


# `course serve 02` serves the course's notebooks/ folder.
app = create_app(Path(__file__).resolve().parent.parent / "notebooks")
