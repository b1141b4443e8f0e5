"""Lesson 08's exports write whole batches in chunks of about 64 KB, not a write per row,
and the JSON Lines export writes the same bytes FastAPI writes for each ReadingOut.

The speed itself is measured in benchmarks/database_streaming.py, never here: these tests
count what makes it, the body messages the app hands to the server, through a plain ASGI
call that records every message.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from course_app.checking import load_exercise
from course_app.demos.sample_db import async_engine, create_database, reading_row

READINGS = 6_000  # one sensor: about 240 KB of CSV and 480 KB of JSON Lines


@pytest.fixture(scope="module")
def lesson() -> ModuleType:
    return load_exercise("08_database_streaming", "solutions")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[async_sessionmaker[Any]]:
    path = create_database(
        Path(tmp_path_factory.mktemp("db08")) / "readings.db",
        readings=READINGS,
        sensors=("boiler",),
    )
    engine = async_engine(path)
    yield async_sessionmaker(engine, expire_on_commit=False)
    asyncio.run(engine.dispose())


def body_messages(app: Any, path: str) -> list[bytes]:
    """GET `path` from the ASGI app; the body of every http.response.body message it sends."""
    bodies: list[bytes] = []

    async def main() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        requested = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()  # the client stays until the end
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                bodies.append(message.get("body", b""))

        await app(scope, receive, send)

    asyncio.run(main())
    return bodies


@pytest.mark.parametrize("export", ["readings.csv", "readings.ndjson"])
def test_exports_write_chunks_of_about_64_kb(
    lesson: ModuleType, sessions: async_sessionmaker[Any], export: str
) -> None:
    """Whole batches per ~64 KB write: neither one per row (FastAPI's generator route) nor
    the whole body at once."""
    bodies = body_messages(lesson.create_app(sessions), f"/sensors/boiler/{export}")
    chunks = [body for body in bodies if body]
    total = sum(len(body) for body in chunks)
    sizes = f"{len(chunks)} writes for {total:,} bytes, sizes {[len(c) for c in chunks][:6]}..."
    assert lesson.CHUNK_SIZE == 64 * 1024
    # Every chunk but the last holds at least CHUNK_SIZE (characters, for the CSV: ASCII
    # here) and less than that plus one batch; a write per row would send thousands of
    # messages, the whole body at once one.
    one_batch = lesson.EXPORT_BATCH_SIZE * (max(map(len, b"".join(chunks).splitlines())) + 1)
    assert all(len(chunk) >= lesson.CHUNK_SIZE for chunk in chunks[:-1]), (
        f"{sizes}: every write but the last should hold about {lesson.CHUNK_SIZE:,} bytes"
    )
    assert all(len(chunk) < lesson.CHUNK_SIZE + one_batch for chunk in chunks), (
        f"{sizes}: a write should hold at most {lesson.CHUNK_SIZE:,} bytes and one batch"
    )
    assert 2 <= len(chunks) <= -(-total // lesson.CHUNK_SIZE), sizes
    assert bodies[-1] == b"", "the response ends with an empty closing message"


def newest_first_rows() -> list[tuple[int, str, str, float]]:
    rows = [reading_row(n, "boiler") for n in range(1, READINGS + 1)]
    return sorted(rows, key=lambda r: (r[2], r[0]), reverse=True)


def test_json_lines_export_writes_what_fastapi_writes(
    lesson: ModuleType, sessions: async_sessionmaker[Any]
) -> None:
    """pydantic_core.to_json() of each row's dict: the bytes of FastAPI's per-item route."""
    app = lesson.create_app(sessions)

    async def per_item(sensor: str) -> AsyncIterator[Any]:
        async for batch in lesson.reading_batches(sessions, sensor):
            for row in batch:
                yield lesson.to_out(row)

    per_item.__annotations__["return"] = AsyncIterator[lesson.ReadingOut]  # not a string
    app.get("/per-item/{sensor}/readings.ndjson")(per_item)

    per_item_bodies = body_messages(app, "/per-item/boiler/readings.ndjson")
    assert len(per_item_bodies) == READINGS + 1, "FastAPI's route: one write per item"
    chunked = b"".join(body_messages(app, "/sensors/boiler/readings.ndjson"))
    assert chunked.split(b"\n") == b"".join(per_item_bodies).split(b"\n"), (
        "the export's lines differ from FastAPI's (compact JSON, UTF-8, same key order)"
    )
    assert json.loads(chunked.splitlines()[0]) == dict(
        zip(lesson.FIELDS, newest_first_rows()[0], strict=True)
    )


def test_csv_export_has_every_row_once(
    lesson: ModuleType, sessions: async_sessionmaker[Any]
) -> None:
    body = b"".join(body_messages(lesson.create_app(sessions), "/sensors/boiler/readings.csv"))
    table = list(csv.reader(io.StringIO(body.decode())))
    assert table[0] == list(lesson.FIELDS)
    assert [int(line[0]) for line in table[1:]] == [row[0] for row in newest_first_rows()]


@pytest.mark.parametrize("encode", ["csv_chunks", "json_lines_chunks"])
def test_small_batches_gather_into_chunks(lesson: ModuleType, encode: str) -> None:
    """Batches smaller than a chunk are gathered until CHUNK_SIZE, not written one by one.

    The routes' batches of 2,000 rows each fill a chunk alone; these of 50 rows do not.
    """
    rows = newest_first_rows()

    async def batches() -> AsyncIterator[list[tuple[int, str, str, float]]]:
        for start in range(0, len(rows), 50):
            yield rows[start : start + 50]

    async def main() -> list[bytes]:
        chunks = [chunk async for chunk in getattr(lesson, encode)(batches())]
        return [c.encode() if isinstance(c, str) else c for c in chunks]

    chunks = asyncio.run(main())
    one_batch = 50 * (max(map(len, b"".join(chunks).splitlines())) + 1)
    sizes = f"{len(chunks)} writes, sizes {[len(c) for c in chunks][:6]}..."
    assert all(lesson.CHUNK_SIZE <= len(c) < lesson.CHUNK_SIZE + one_batch for c in chunks[:-1]), (
        sizes
    )
    assert 0 < len(chunks[-1]) < lesson.CHUNK_SIZE + one_batch, sizes
    assert len(b"".join(chunks).splitlines()) == len(rows) + (encode == "csv_chunks"), sizes
