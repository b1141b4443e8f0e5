"""Lesson 08: readings newest first with keyset batches, a live tail that sends one event per
batch and resumes after Last-Event-ID, and no database connection held while a client
takes its time.

Every test runs on a fresh SQLite file in pytest's tmp_path. The engine records each SQL
statement (with its values filled in) as SQLite starts to run it, in the thread that runs
it, so the tests can see the queries, wait for them and hold one back.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import httpx_sse
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import async_sessionmaker

from course_app.checking import PluggedApp, SharedServer, shared_server  # noqa: F401 (a fixture)
from course_app.demos.sample_db import SENSORS, add_readings, async_engine, reading_row
from course_app.demos.sample_db import create_database as create_readings_database

# verify=False on loopback clients: plain HTTP, and no CA bundle to load (0.05-0.2 s of CPU each).
READINGS = 300  # 100 per sensor
ALL_SENSORS = SENSORS  # attic, boiler, cellar, round-robin


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(predicate())


class Database:
    """A readings file, an engine over it, and the statements that engine ran."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.statements: list[str] = []
        self.hold: Callable[[str], None] | None = None  # runs in the database's thread
        self.engine = async_engine(path, on_statement=self._on_statement)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def _on_statement(self, sql: str) -> None:
        self.statements.append(" ".join(sql.split()))
        if self.hold is not None:
            self.hold(sql)

    def checked_out(self) -> int:
        return self.engine.pool.checkedout()  # type: ignore[attr-defined]

    def selects(self, sensor: str) -> list[str]:
        return [s for s in list(self.statements) if s.startswith("SELECT") and f"'{sensor}'" in s]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(create_readings_database(tmp_path / "readings.db", readings=READINGS))
    yield database
    asyncio.run(database.engine.dispose())


def newest_first(sensor: str, count: int = READINGS) -> list[int]:
    """The ids of `sensor`'s readings by (taken_at, id) descending, worked out without SQL."""
    rows = [reading_row(n) for n in range(1, count + 1)]
    ordered = sorted(rows, key=lambda r: (r[2], r[0]), reverse=True)
    return [id_ for id_, s, _taken_at, _ in ordered if s == sensor]


def collect(items: AsyncIterator[Any], at_most: int) -> list[Any]:
    """At most `at_most` items of the generator (a wrong keyset may repeat rows forever)."""

    async def main() -> list[Any]:
        got = []
        try:
            async for item in items:
                got.append(item)
                if len(got) >= at_most:
                    break
        finally:
            await items.aclose()
        return got

    return asyncio.run(main())


def batch_sizes(batches: list[Any]) -> list[int]:
    """How many rows each batch holds; fails clearly if the items are not lists of rows."""
    for batch in batches:
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes, Row)):
            pytest.fail(
                f"reading_batches yielded {type(batch).__name__} {batch!r:.80}: yield each"
                " batch as one list of rows (what `.all()` returns), not the rows one by one"
            )
    return [len(batch) for batch in batches]


def test_newest_first_with_ties(exercise: ModuleType, db: Database) -> None:
    """reading_batches gives every reading of one sensor once, by (taken_at, id) descending

    Readings taken in the same minute share a taken_at, and a batch can end in the middle
    of them. Walking down the table, what does `taken_at < last taken_at` skip then, and
    what does `<=` repeat? Which pair of columns decides where the next batch starts, and
    in which direction do both sort?
    """
    for sensor in ALL_SENSORS:
        for batch_size in (3, 7, 100, 1000):
            expected = newest_first(sensor)
            batches = collect(
                exercise.reading_batches(db.sessions, sensor, batch_size),
                len(expected) // batch_size + 3,
            )
            batch_sizes(batches)
            got = [row.id for batch in batches for row in batch]
            assert got == expected, f"sensor {sensor!r}, batch_size={batch_size}"


def test_batches_are_full_and_never_empty(exercise: ModuleType, db: Database) -> None:
    """each batch holds batch_size rows, the last one fewer, and no batch is empty

    100 readings 7 at a time: how many rows does the last batch hold? After a batch of
    fewer than 7, is there anything left to ask for? What should a sensor without a single
    reading give: an empty list, or no batch at all?
    """
    sizes = batch_sizes(collect(exercise.reading_batches(db.sessions, "boiler", 7), 20))
    assert sizes == [7] * 14 + [2], f"batches of {sizes} rows for 100 readings, 7 at a time"
    sizes = batch_sizes(collect(exercise.reading_batches(db.sessions, "boiler", 100), 5))
    assert sizes == [100], f"batches of {sizes} rows for 100 readings, 100 at a time"
    garage = collect(exercise.reading_batches(db.sessions, "garage", 5), 3)
    assert garage == [], f"a sensor without readings gave {garage}: no batch at all"


def test_batches_are_keyset_queries(exercise: ModuleType, db: Database) -> None:
    """each batch is one query with LIMIT batch_size and no OFFSET, one query per batch

    How many queries does reading 100 rows 7 at a time take? Does each say where to start
    with a WHERE on (taken_at, id), rather than by skipping rows with OFFSET?
    """
    rows = sum(batch_sizes(collect(exercise.reading_batches(db.sessions, "boiler", 7), 30)))
    assert rows == 100, f"got {rows} rows; boiler has 100 readings"
    queries = db.selects("boiler")
    if not 100 // 7 + 1 <= len(queries) <= 100 // 7 + 2:
        pytest.fail(f"{len(queries)} queries for 100 rows, 7 per batch; the first: {queries[0]}")
    for sql in queries:
        limit = re.search(r"\bLIMIT (\d+)", sql)
        if limit is None or int(limit[1]) > 7:
            pytest.fail(f"a query without LIMIT 7: {sql}")
        offset = re.search(r"\bOFFSET (\d+)", sql)
        if offset is not None and offset[1] != "0":
            pytest.fail(f"OFFSET paging: {sql}")


def test_no_connection_while_the_consumer_holds_a_batch(exercise: ModuleType, db: Database) -> None:
    """while the consumer holds a batch (a client that stops reading), no connection is checked out

    Where does your `async with sessions() as session:` block end: before the `yield`,
    or around it? A client may take an hour to read the next batch.
    """

    async def held_after_first(rows: AsyncIterator[Any]) -> int:
        try:
            await anext(rows)
            return db.checked_out()
        finally:
            await rows.aclose()

    async def main() -> tuple[int, int]:
        export = exercise.reading_batches(db.sessions, "attic", 10)
        tail = exercise.live_readings(db.sessions, "attic", 0, poll_every=0.05)
        return await held_after_first(export), await held_after_first(tail)

    export_held, tail_held = asyncio.run(main())
    assert export_held == 0, "reading_batches holds a connection at its yield"
    assert tail_held == 0, "live_readings holds a connection at its yield"


@pytest.fixture
def client(exercise: ModuleType, db: Database) -> Iterator[TestClient]:
    with TestClient(exercise.create_app(db.sessions, poll_every=0.05)) as test_client:
        yield test_client


class Requests:
    """An app, counting its HTTP requests under way: a stream that outlives its test."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.under_way = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.under_way += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.under_way -= 1


@pytest.fixture
def server(
    exercise: ModuleType,
    db: Database,
    shared_server: SharedServer,  # noqa: F811 (the fixture imported above)
) -> Iterator[PluggedApp]:
    """The exercise's app on a real uvicorn server: real sockets, real disconnects.

    One server for the module (its start and stop cost more than most of these tests),
    a new app on this test's database for each test.
    """
    requests = Requests(exercise.create_app(db.sessions, poll_every=0.05))
    yield shared_server.plug(requests)
    wait_for(lambda: db.checked_out() == 0, 5)  # let a last query finish
    # A client that left is noticed at once: its stream ends within milliseconds. One that
    # never ends (a learner's loop that cannot be cancelled) is cut off by a stop, as the
    # stop of a server of its own did: it must not run on while the next test runs.
    if not wait_for(lambda: requests.under_way == 0, 0.5):
        shared_server.stop()


def test_ndjson_and_csv_exports(client: TestClient) -> None:
    """GET /sensors/attic/readings.ndjson and .csv stream every reading, newest first

    Both routes are written for you: they stream reading_batches(). Do its batches hold
    the rows with all four columns (COLUMNS), newest first?
    """
    expected_ids = newest_first("attic")
    rows = {row[0]: row for row in (reading_row(n) for n in range(1, READINGS + 1))}
    response = client.get("/sensors/attic/readings.ndjson")
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["id"] for line in lines] == expected_ids
    assert lines[0] == dict(
        zip(("id", "sensor", "taken_at", "celsius"), rows[lines[0]["id"]], strict=True)
    )

    response = client.get("/sensors/attic/readings.csv")
    assert response.status_code == 200
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["id", "sensor", "taken_at", "celsius"]
    assert [int(line[0]) for line in table[1:]] == expected_ids


def test_client_leaving_mid_export_releases_everything(
    exercise: ModuleType, db: Database, server: PluggedApp
) -> None:
    """a client that leaves in the middle of an export leaves no connection checked out

    When the client hangs up, where is your generator: inside a query, or at a `yield`?
    Is a session open at that moment, and who closes it?
    """
    collect(exercise.reading_batches(db.sessions, "cellar", 10), 1)
    for url in ("/sensors/cellar/readings.ndjson", "/sensors/cellar/readings.csv"):
        with (
            httpx.Client(timeout=10, verify=False) as http,
            http.stream("GET", f"{server.url}{url}") as response,
        ):
            assert response.status_code == 200
            next(response.iter_lines())
        assert wait_for(lambda: db.checked_out() == 0, 5), (
            f"{db.checked_out()} connection(s) still checked out after the client left {url}"
        )


def test_last_seen_reads_good_ids(exercise: ModuleType) -> None:
    """last_seen() gives None without a header (or an empty one), else the id as an int

    What should a client with no id yet get: an error, or the stream from now on? Is 0 an
    id a client may send? And the largest integer SQLite can store?
    """
    cases = {None: None, "": None, "0": 0, "42": 42, "007": 7, str(2**63 - 1): 2**63 - 1}
    assert {header: exercise.last_seen(header) for header in cases} == cases


# int() accepts " 7", "+1", "-1", "7_0" and "٣" (an Arabic-Indic 3), none of them an id
# this stream sent; it raises on "abc", "1.5", "1e3" and "²", although "²".isdigit() is True.
BAD_IDS = ["abc", "-1", "+1", "1.5", " 7", "7_0", "1e3", "٣", "²", str(2**63), "9" * 30, "9" * 5000]


def get_live_raw(server: PluggedApp, header_value: bytes) -> int:
    """GET the live tail over a plain socket with these exact header bytes; the status."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(
            b"GET /sensors/attic/live HTTP/1.1\r\nHost: test\r\nLast-Event-ID: "
            + header_value
            + b"\r\nConnection: close\r\n\r\n"
        )
        status_line = client.makefile("rb").readline()
    return int(status_line.split()[1])


def test_malformed_last_event_id_is_a_400(exercise: ModuleType, server: PluggedApp) -> None:
    """a malformed Last-Event-ID is a 400 before any stream starts, never a 500

    `int()` accepts " 7", "+1", "-1", "7_0" and "٣" (an Arabic-Indic digit), none of them
    an id you sent; it raises on "abc", "1.5", "1e3" and "²", although "²".isdigit() is
    True. Which test accepts exactly ASCII digits? What does SQLite do with a number above
    2**63 - 1? Where must the check run so that a 400 can still be sent?
    """
    for header in BAD_IDS:
        shown = repr(header if len(header) <= 20 else header[:20] + "...")
        try:
            exercise.last_seen(header)
        except HTTPException as refused:
            assert refused.status_code == 400, f"last_seen({shown}) raised {refused.status_code}"
        else:
            pytest.fail(f"last_seen({shown}) accepted it; expected HTTPException(400)")
        # Over a real socket, as a client sends it: the server decodes header bytes as
        # Latin-1, so b"\xb2" arrives as "²" (TestClient would re-encode it).
        try:
            raw = header.encode("latin-1")
        except UnicodeEncodeError:
            continue  # no client can send it as one header value: the direct call covers it
        if raw != raw.strip(b" \t"):
            continue  # HTTP strips the spaces around a header value: the server sees "7"
        status = get_live_raw(server, raw)
        assert status == 400, f"Last-Event-ID: {shown} (bytes {raw[:20]!r}) answered {status}"


class Tail:
    """An SSE client of a live tail whose reads fail, instead of hanging, after 5 s of silence."""

    def __init__(self, url: str, last_id: int | None = None) -> None:
        self.url = url
        self.headers = {} if last_id is None else {"last-event-id": str(last_id)}
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> Tail:
        http = self.stack.enter_context(httpx.Client(timeout=5, verify=False))
        source = self.stack.enter_context(
            httpx_sse.connect_sse(http, "GET", self.url, headers=self.headers)
        )
        if source.response.status_code != 200:
            source.response.read()
            self.stack.close()
            raise AssertionError(
                f"GET {source.response.url.path} answered {source.response.status_code}: "
                f"{source.response.text[:200]}"
            )
        self.events = source.iter_sse()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stack.close()

    def readings(self, count: int) -> list[int]:
        """The ids of the next `count` readings or more, from as many events as that takes."""
        ids: list[int] = []
        while len(ids) < count:
            ids.extend(reading_ids(self.read(1)))
        return ids

    def read(self, count: int | None) -> list[httpx_sse.ServerSentEvent]:
        """The next `count` events (None: all, to the end of the stream)."""
        events: list[httpx_sse.ServerSentEvent] = []
        try:
            while count is None or len(events) < count:
                events.append(next(self.events))
        except StopIteration:
            if count is not None:
                raise AssertionError(
                    f"waited for {count} events; the stream ended after {kinds(events)}"
                ) from None
        except httpx.ReadTimeout:
            wanted = "the end of the stream" if count is None else f"{count} events"
            raise AssertionError(
                f"waited for {wanted}; got {kinds(events)}, then 5 s of silence"
            ) from None
        return events


def kinds(events: list[httpx_sse.ServerSentEvent]) -> list[str]:
    return [event.event for event in events]


def reading_ids(events: list[httpx_sse.ServerSentEvent]) -> list[int]:
    """The ids of the readings in `readings` events, checking each event's shape and id."""
    ids: list[int] = []
    for event in events:
        assert event.event == "readings", (
            f"expected a readings event, got {event.event}: {event.data}"
        )
        batch = json.loads(event.data)
        assert isinstance(batch, list) and batch, (
            f"a readings event holds a non-empty list: {event.data[:200]}"
        )
        assert event.id == str(batch[-1]["id"]), (
            f"the event id is the id of the newest reading in it: id {event.id!r}, readings"
            f" {[reading['id'] for reading in batch]}"
        )
        ids.extend(reading["id"] for reading in batch)
    return ids


def newest_id(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT max(id) FROM readings").fetchone()[0]


def first_live_event(exercise: ModuleType, db: Database) -> None:
    """Calls live_readings() directly once, so that its own error shows first."""
    collect(exercise.live_readings(db.sessions, "attic", 0, poll_every=0.01), 1)


def of_sensor(sensor: str, ids: range) -> list[int]:
    return [n for n in ids if reading_row(n)[1] == sensor]


def test_tail_resumes_after_last_event_id_and_follows_new_rows(
    exercise: ModuleType, db: Database, server: PluggedApp
) -> None:
    """the tail resumes exactly after Last-Event-ID, one event per batch, then follows new rows

    Which readings have an id above the one the client sends, and which sensor's? Do the
    rows of one query go out as one `readings` event, with the newest one's id? After the
    last of them, what does your loop do until a writer adds more?
    """
    assert exercise.last_seen("250") == 250
    first_live_event(exercise, db)
    url = f"{server.url}/sensors/boiler/live"
    expected = of_sensor("boiler", range(251, READINGS + 1))
    with Tail(url, 250) as tail:
        first = tail.read(1)
        assert reading_ids(first) == expected, (
            "the readings already there when the client connects come as one readings event"
        )
        add_readings(db.path, 2, sensor="attic")
        added = add_readings(db.path, 3, sensor="boiler")
        assert tail.readings(3) == added
    assert wait_for(lambda: db.checked_out() == 0, 5), "a connection is still checked out"


def test_tail_without_last_event_id_starts_now(
    exercise: ModuleType, db: Database, server: PluggedApp
) -> None:
    """without Last-Event-ID the tail sends only readings that arrive after it connected

    Which id marks "now" when the client has none, and when do you read it: once at the
    start, or every time you look?
    """
    assert exercise.last_seen(None) is None
    first_live_event(exercise, db)
    url = f"{server.url}/sensors/attic/live"
    with Tail(url) as tail:
        seen = len(db.statements)
        # By its second query, the stream has settled where "now" is.
        assert wait_for(lambda: len(db.statements) >= seen + 2, 5), "the tail ran no query"
        added = add_readings(db.path, 2, sensor="attic")
        assert tail.readings(2) == added


def test_database_error_mid_stream_is_one_safe_error_event(
    exercise: ModuleType, db: Database, server: PluggedApp
) -> None:
    """a database error mid-stream ends the tail with one error event, safe text, nothing held

    Which exception class do SQLAlchemy's errors share? What may the event say, and where
    do the details (the SQL, the table) go instead? Which block gives the session back?
    """
    assert exercise.last_seen(None) is None
    first_live_event(exercise, db)
    url = f"{server.url}/sensors/cellar/live"
    with Tail(url, newest_id(db.path)) as tail:
        added = add_readings(db.path, 1, sensor="cellar")
        assert tail.readings(1) == added
        with sqlite3.connect(db.path) as connection:  # the next query fails: no such table
            connection.execute("ALTER TABLE readings RENAME TO readings_moved")
        rest = tail.read(None)
    assert [event.event for event in rest] == ["error"], "expected one error event, then the end"
    assert json.loads(rest[0].data) == {"message": exercise.UNAVAILABLE}
    assert wait_for(lambda: db.checked_out() == 0, 5), "a connection is still checked out"
    assert "no such table" in "\n".join(server.logs), "log the database error on the server"


def test_a_second_client_flows_while_an_export_waits_on_the_database(
    exercise: ModuleType, db: Database, server: PluggedApp
) -> None:
    """another client's events keep flowing while an export's query waits on the database

    While the database works on one client's batch, is the event loop free to serve the
    next client? Does anything in your code wait on the database without `await`?
    """
    collect(exercise.reading_batches(db.sessions, "boiler", 10), 1)
    release = threading.Event()
    export_waiting = threading.Event()

    def hold_boiler_queries(sql: str) -> None:
        if "'boiler'" in sql and not release.is_set():
            export_waiting.set()
            release.wait(20)

    db.hold = hold_boiler_queries
    exported: list[str] = []
    failures: list[BaseException] = []

    def export() -> None:
        try:
            with (
                httpx.Client(timeout=30, verify=False) as http,
                http.stream("GET", f"{server.url}/sensors/boiler/readings.ndjson") as response,
            ):
                exported.extend(response.iter_lines())
        except Exception as exc:
            failures.append(exc)

    exporter = threading.Thread(target=export)
    exporter.start()
    try:
        assert export_waiting.wait(10), "the export never queried the database"
        url = f"{server.url}/sensors/attic/live"
        try:
            with Tail(url, 0) as tail:
                got = tail.readings(5)[:5]
        except httpx.ReadTimeout:
            pytest.fail("the server answered nothing while the export's query was running")
        assert got == of_sensor("attic", range(1, 16))
        assert not release.is_set()
    finally:
        release.set()
        exporter.join(20)
    assert not failures, f"the export failed: {failures[0]!r}"
    assert len(exported) == 100, "the export did not finish once the database answered"
