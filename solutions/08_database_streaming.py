"""Lesson 08: sensor readings from SQLite, exported newest first and followed live.

The notebook streamed a shop's orders by id. Here the table holds temperature readings of
several sensors (`course_app.demos.sample_db.Reading`). A reading's id grows as readings
*arrive*; `taken_at` says when it was measured. Some readings arrive late, so the two
orders differ, and readings taken in the same minute share a `taken_at`.

- `reading_batches()`: one sensor's readings, newest `taken_at` first (ties: the higher
  id first), as lists of at most `batch_size` rows, with keyset pagination on the pair
  (taken_at, id), walking *down* the table. Each batch is read through a session of its
  own, closed before the batch is yielded, so a client that stops reading holds no
  database connection. The NDJSON and CSV routes stream it: a log viewer's "latest first",
  a batch at a time, written in chunks of about 64 KB (`csv_chunks()`,
  `json_lines_chunks()`). With the table's own columns (`readings.c`) in the query,
  that makes a streamed export as fast as loading every row first.
- `last_seen()`: the dependency that reads the `Last-Event-ID` header. It runs before the
  response starts, so a malformed id can still get a real `400`.
- `live_readings()`: the sensor's readings that arrive after a given id, forever, as SSE.
  Unlike the notebook's tail (one event per row), it sends **one `readings` event per
  poll** that found something, holding all the new readings as a list, with the newest
  one's id as the event id: fewer writes, and a client that reconnects with
  `Last-Event-ID` still resumes exactly after the last reading it received. A database
  error ends the stream with one `error` event that tells the client nothing about the
  database.

Check your work: `course check 08` in a terminal, or the check cell in the notebook.
Try it by hand: `course serve 08` (a demo database in a temporary folder, with a writer
adding a reading per sensor every second), then
`curl -N http://127.0.0.1:8000/sensors/attic/live`,
`curl -N -H "Last-Event-ID: 29990" http://127.0.0.1:8000/sensors/attic/live` and
`curl -N http://127.0.0.1:8000/sensors/boiler/readings.csv | head`.
"""

import contextlib
import csv
import io
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel
from pydantic_core import to_json
from sqlalchemy import Row, func, select, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from course_app.demos.sample_db import Reading, demo_database
from course_app.runtime import pace
from course_app.streams import QuietDisconnectRoute

logger = logging.getLogger("lesson.readings")

Sessions = async_sessionmaker[AsyncSession]

BATCH_SIZE = 500  # readings per query of the live tail: at most this many in one event
# Rows per query of an export: a query costs about a millisecond (a session, a pooled
# connection, six hand-offs to aiosqlite's thread), which 2,000 rows make cheap per row.
EXPORT_BATCH_SIZE = 2_000
CHUNK_SIZE = 64 * 1024  # bytes per write to the client: an export writes per chunk, not per row
POLL_EVERY = 0.5  # seconds between two looks for new readings (a demo delay: paced)
MAX_ID = 2**63 - 1  # the largest integer SQLite stores; a larger one is no reading's id
UNAVAILABLE = "Live readings are unavailable right now. Try again later."
# The readings table itself. A query built from its columns (`readings.c.sensor`),
# not the model's attributes (`Reading.sensor`), is plain SQLAlchemy Core: its rows come
# back without the ORM's step per row, which would cost an export about a third of its time.
readings = Reading.__table__
COLUMNS = (readings.c.id, readings.c.sensor, readings.c.taken_at, readings.c.celsius)


class ReadingOut(BaseModel):
    id: int
    sensor: str
    taken_at: str
    celsius: float


FIELDS = tuple(ReadingOut.model_fields)  # the names of COLUMNS, in their order


def to_out(row: Row[Any]) -> ReadingOut:
    return ReadingOut.model_validate(row, from_attributes=True)


async def reading_batches(
    sessions: Sessions, sensor: str, batch_size: int = EXPORT_BATCH_SIZE
) -> AsyncIterator[Sequence[Row[Any]]]:
    """Every reading of `sensor`, newest first (by taken_at, then id, descending), as
    lists of at most `batch_size` rows: one list per query."""
    # TODO: select COLUMNS for the readings of `sensor`, ordered by taken_at, then id, both
    #       descending (`.desc()`), at most `batch_size` rows per query. Use the table's
    #       columns throughout (`readings.c.sensor`, not `Reading.sensor`). Keyset
    #       pagination, walking down: each batch starts *below* the last row of the
    #       previous one, on both columns at once. sqlalchemy's tuple_() builds that
    #       comparison. No OFFSET.
    # TODO: read each batch in a session of its own (`async with sessions() as session:`)
    #       and leave that block before you yield the batch, as a list of rows. (The
    #       notebook also shields that block from cancellation, so that a client leaving
    #       mid-query costs no connection: `with anyio.CancelScope(shield=True):`.)
    # TODO: stop after a batch that came back with fewer than `batch_size` rows, and never
    #       yield an empty list: a sensor without readings gives no batch at all.
    ### BEGIN SOLUTION
    newest_first = (
        select(*COLUMNS)
        .where(readings.c.sensor == sensor)
        .order_by(readings.c.taken_at.desc(), readings.c.id.desc())
        .limit(batch_size)
    )
    query = newest_first
    while True:
        with anyio.CancelScope(shield=True):
            async with sessions() as session:
                batch = (await session.execute(query)).all()
        if batch:
            yield batch
        if len(batch) < batch_size:
            return
        last = batch[-1]
        below = tuple_(readings.c.taken_at, readings.c.id) < (last.taken_at, last.id)
        query = newest_first.where(below)
    ### END SOLUTION


def last_seen(last_event_id: Annotated[str | None, Header()] = None) -> int | None:
    """The reading id a reconnecting client sends in `Last-Event-ID`, or None.

    A dependency: FastAPI runs it before the response starts, so it can still refuse the
    request with a real status. Our choice for an id this server cannot have sent: 400.
    """
    # TODO: no header, or an empty one (a client with no id yet) -> None.
    # TODO: ASCII digits only, at most MAX_ID -> that number, as an int.
    # TODO: anything else ("abc", "-1", "1.5", " 7", "7_0", "٣", "²", 5,000 digits)
    #       -> raise HTTPException(status_code=400, detail=...). Never let a ValueError
    #       or a number too large for SQLite through: that would be a 500, or worse, a
    #       stream that breaks after its 200.
    ### BEGIN SOLUTION
    if not last_event_id:
        return None
    digits = last_event_id.isascii() and last_event_id.isdigit()
    if digits and len(last_event_id) <= len(str(MAX_ID)) and int(last_event_id) <= MAX_ID:
        return int(last_event_id)
    raise HTTPException(status_code=400, detail="Last-Event-ID must be the id of a reading")
    ### END SOLUTION


async def live_readings(
    sessions: Sessions, sensor: str, after: int | None, poll_every: float = POLL_EVERY
) -> AsyncIterator[ServerSentEvent]:
    """`sensor`'s readings with an id above `after`, forever: one SSE event per batch.

    `after=None`: only readings that arrive from now on.
    """
    # TODO: `after` is None: start after the newest reading there is now (select the
    #       max() of readings.c.id; an empty table has none: start after 0).
    # TODO: then, forever: read `sensor`'s readings with an id above the last one sent,
    #       in id order, at most BATCH_SIZE per query, in a session of their own. When
    #       that brings rows, yield them all as ONE event:
    #       ServerSentEvent(event="readings", data=[to_out(row) for row in rows], id=...)
    #       whose id is the id of the newest reading in it (as a str). When a query brings
    #       fewer than BATCH_SIZE rows, you are up to date: wait
    #       `await pace.sleep(poll_every)` before you look again.
    # TODO: a database error (sqlalchemy.exc.SQLAlchemyError) ends the stream: log it
    #       with logger.exception() (the details stay in the server's log), then yield
    #       one ServerSentEvent(event="error", data={"message": UNAVAILABLE}) and stop.
    ### BEGIN SOLUTION
    try:
        if after is None:
            async with sessions() as session:
                after = await session.scalar(select(func.max(readings.c.id))) or 0
        while True:
            newer = (
                select(*COLUMNS)
                .where(readings.c.sensor == sensor, readings.c.id > after)
                .order_by(readings.c.id)
                .limit(BATCH_SIZE)
            )
            with anyio.CancelScope(shield=True):
                async with sessions() as session:
                    rows = (await session.execute(newer)).all()
            if rows:
                after = rows[-1].id
                batch = [to_out(row) for row in rows]
                yield ServerSentEvent(event="readings", data=batch, id=str(after))
            if len(rows) < BATCH_SIZE:
                await pace.sleep(poll_every)
    except SQLAlchemyError:
        logger.exception("live readings of %r failed", sensor)
        yield ServerSentEvent(event="error", data={"message": UNAVAILABLE})
    ### END SOLUTION


async def csv_chunks(
    batches: AsyncIterator[Sequence[Row[Any]]], chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[str]:
    """The rows as CSV text, header first: whole batches, written once `chunk_size`
    characters have gathered."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(FIELDS)
    async for batch in batches:
        writer.writerows(batch)  # one call per batch: the loop over its rows runs in C
        if buffer.tell() >= chunk_size:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate(0)
    if buffer.tell():
        yield buffer.getvalue()


async def json_lines_chunks(
    batches: AsyncIterator[Sequence[Row[Any]]], chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """The rows as JSON Lines, one object per row: whole batches, written once
    `chunk_size` bytes have gathered.

    The rows come from our own typed columns, so a ReadingOut per row would only check
    what the database already guarantees: pydantic_core.to_json() writes each row's dict
    as FastAPI writes a ReadingOut (the same bytes), in a fraction of the time.
    """
    buffer = bytearray()
    async for batch in batches:
        for row in batch:
            buffer += to_json(dict(zip(FIELDS, row, strict=True)))
            buffer += b"\n"
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def current_sessions(request: Request) -> Sessions:
    return request.app.state.sessions


SessionsDep = Annotated[Sessions, Depends(current_sessions)]


def create_app(sessions: Sessions | None = None, poll_every: float = POLL_EVERY) -> FastAPI:
    """The readings app. Without `sessions`, its lifespan makes a demo database."""

    @contextlib.asynccontextmanager
    async def with_demo_database(app: FastAPI) -> AsyncIterator[None]:
        async with demo_database() as app.state.sessions:
            yield

    app = FastAPI(
        title="Lesson 08: sensor readings",
        lifespan=None if sessions is not None else with_demo_database,
    )
    app.state.sessions = sessions
    # A client that leaves the live tail is not an error: without this, FastAPI 0.163 can
    # log a BrokenResourceError traceback for it (the notebook's "Going deeper" says why).
    app.router.route_class = QuietDisconnectRoute

    # Not a generator path operation: FastAPI would validate, serialise and write each
    # row on its own (one write per row). One write per ~64 KB of batches instead.
    @app.get("/sensors/{sensor}/readings.ndjson", response_class=StreamingResponse)
    async def readings_ndjson(sensor: str, sessions: SessionsDep) -> StreamingResponse:
        return StreamingResponse(
            json_lines_chunks(reading_batches(sessions, sensor)),
            media_type="application/jsonl",
        )

    @app.get("/sensors/{sensor}/readings.csv")
    async def readings_csv(sensor: str, sessions: SessionsDep) -> StreamingResponse:
        return StreamingResponse(
            csv_chunks(reading_batches(sessions, sensor)),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="readings.csv"'},
        )

    @app.get("/sensors/{sensor}/live", response_class=EventSourceResponse)
    async def live(
        sensor: str, sessions: SessionsDep, after: Annotated[int | None, Depends(last_seen)]
    ) -> AsyncIterator[ServerSentEvent]:
        async for event in live_readings(sessions, sensor, after, poll_every):
            yield event

    return app


app = create_app()
