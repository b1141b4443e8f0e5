"""Lesson 02: a file share with one folder per user, and a CSV listing of its files.

The notebook served one folder and exported fixed rows. Here the same skills meet another
layout and another data shape:

- `GET /users/{user}/files/{name:path}` streams a file of `user` from `<base>/<user>/`,
  and only from there: not from the base folder, not from another user's folder (`anna/`
  sits next to `ann/`), not through a symlink. `?head=N` sends only the first N bytes.
- `GET /files.csv?fields=path&fields=size` streams a listing of every user's files as
  CSV, with the columns the client asked for, in that order.

Check your work: `course check 02` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 02` serves the course folder, each subfolder standing in
for a user (`notebooks`, `exercises`, ...):
`curl -N "http://127.0.0.1:8000/files.csv?fields=user&fields=path"`,
`curl -OJ "http://127.0.0.1:8000/users/notebooks/files/00_welcome.ipynb"`,
`curl "http://127.0.0.1:8000/users/notebooks/files/00_welcome.ipynb?head=120"` and
`curl --path-as-is "http://127.0.0.1:8000/users/notebooks/files/../README.md"` (a 404:
README.md is in the base folder, not in the folder of user `notebooks`).
"""

import csv
import io
import os
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import StreamingResponse

CHUNK_SIZE = 64 * 1024


def user_file(base_dir: Path, user: str, name: str) -> Path:
    """The regular file ``name`` in the folder of ``user`` (``base_dir / user``).

    HTTPException 400 for a malformed ``user`` or ``name``; 404 for anything that is not
    a regular file inside that user's own folder.
    """
    # TODO: 400 if `user` or `name` is malformed: empty, absolute (starts with "/"), or
    #       containing a NUL ("\0") or a backslash.
    # TODO: the user's folder is base_dir / user, resolved. It must be a directory inside
    #       the resolved base_dir, and not base_dir itself (user "." is nobody). A user
    #       folder can be a symlink too.
    # TODO: the file is that folder / name, resolved. It must be a regular file inside the
    #       user's resolved folder: not merely inside base_dir, and not by string prefix
    #       (".../anna/secret.txt" starts with the characters ".../ann").
    #       Anything else is the same 404, including an OSError (a name too long).
    raise NotImplementedError("TODO: write user_file()")


def content_disposition(filename: str) -> str:
    """``attachment`` with a readable ASCII ``filename`` and the exact UTF-8 ``filename*``."""
    # TODO: build the plain filename="..." for clients that ignore filename* (curl -J):
    #       printable ASCII only, without `"` or `\`, and readable: "résumé" -> "resume".
    #       unicodedata.normalize("NFKD", name) splits "é" into "e" + a combining accent
    #       (unicodedata.combining(ch) is non-zero for the accent): drop the accents, then
    #       replace every other character that is not allowed with "_".
    #       'résumé "final".txt' -> filename="resume _final_.txt"
    # TODO: return  attachment; filename="<fallback>"; filename*=UTF-8''<encoded>
    #       where <encoded> is the exact name percent-encoded: every byte but letters,
    #       digits and -._~ (what does urllib.parse.quote leave alone by default?).
    raise NotImplementedError("TODO: write content_disposition()")


def read_chunks(
    path: Path, chunk_size: int = CHUNK_SIZE, limit: int | None = None
) -> Iterator[bytes]:
    """The file's bytes, or only its first ``limit`` bytes, read ``chunk_size`` at most."""
    # TODO: open the file in binary mode in a `with` block and yield what each read returns,
    #       until the file ends or `limit` bytes have been yielded (None: no limit).
    #       Never ask one read() for more than chunk_size, nor for more than the bytes
    #       still missing to reach the limit: a 100-byte preview of a 2 GB file reads 100
    #       bytes, not a whole chunk.
    raise NotImplementedError("TODO: write read_chunks()")
    yield  # keeps this a generator; replace both lines


def csv_rows(records: Iterable[Mapping[str, object]], fields: Sequence[str]) -> Iterator[str]:
    """A CSV header line of ``fields``, then one line per record with those fields only."""
    # TODO: yield the header line first, before touching `records` (the client sees the
    #       download start even when the first record is slow to come).
    # TODO: then one line per record, pulled one at a time: the values of `fields`, in that
    #       order (a record may hold more keys). Write with the csv module into ONE
    #       io.StringIO buffer that you empty after each line; csv.DictWriter takes
    #       fieldnames= and extrasaction=. Never f-strings: file names can hold commas,
    #       quotes, even line breaks.
    raise NotImplementedError("TODO: write csv_rows()")
    yield  # keeps this a generator; replace both lines


Field = Literal["user", "path", "size"]
ALL_FIELDS: list[Field] = ["user", "path", "size"]


def list_files(base_dir: Path) -> Iterator[dict[str, object]]:
    """Every regular file of every user, found lazily (os.walk), in a stable order.

    Skips hidden names, symlinks and anything in base_dir that is not a user's folder.
    """
    for folder in sorted(base_dir.iterdir()):
        if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):  # never follows symlinks
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                path = Path(dirpath, filename)
                if filename.startswith(".") or path.is_symlink() or not path.is_file():
                    continue
                yield {
                    "user": folder.name,
                    "path": path.relative_to(folder).as_posix(),
                    "size": path.stat().st_size,
                }


def create_app(base_dir: Path) -> FastAPI:
    app = FastAPI(title="Lesson 02: a file share")

    # Sync routes and sync generators: FastAPI and Starlette run them in worker threads,
    # so no file call (resolve, stat, open, read, os.walk) blocks the event loop.
    @app.get("/users/{user}/files/{name:path}")
    def download(
        user: str, name: str, head: Annotated[int | None, Query(ge=1)] = None
    ) -> StreamingResponse:
        path = user_file(base_dir, user, name)  # 400/404 before any byte is sent
        size = path.stat().st_size
        return StreamingResponse(
            read_chunks(path, limit=head),
            media_type="application/octet-stream",
            headers={
                "content-disposition": content_disposition(path.name),
                "content-length": str(size if head is None else min(size, head)),
            },
        )

    @app.get("/files.csv")
    def files_csv(fields: Annotated[list[Field] | None, Query()] = None) -> StreamingResponse:
        return StreamingResponse(
            csv_rows(list_files(base_dir), fields or ALL_FIELDS),
            media_type="text/csv",
            headers={"content-disposition": content_disposition("files.csv")},
        )

    return app


# `course serve 02` serves the course folder: each subfolder stands in for a user.
app = create_app(Path(__file__).resolve().parent.parent)
