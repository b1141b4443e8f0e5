"""Sample SQLite databases for lesson 08: shop orders and sensor readings.

The data is the same on every run (each column is a formula of the row's id), and a file
is filled fast: ``sqlite3``'s ``executemany`` in one transaction, 100,000 rows in a few
tenths of a second. The tables are declared once, as SQLAlchemy models, for the notebook,
the exercise, its tests and the benchmark::

    path = create_database(folder / "shop.db", orders=100_000, readings=3_000)
    engine = async_engine(path)                        # SQLAlchemy asyncio over aiosqlite
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    ...
    add_orders(path, 3)                                # another writer adds rows meanwhile

``latency=`` makes every statement wait in the thread that runs it, as a database across
a network would: on the event loop's thread for a sync engine used in async code, in
aiosqlite's own thread for the async engine. ``on_statement=`` sees every statement's SQL
(with its parameters filled in), in that same thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Index, create_engine, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from course_app.runtime import pace

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
# Names that need quoting in a CSV file, and one that is not ASCII.
CUSTOMERS = ("Ada Lovelace", "Smith, Jane", 'The "Best" Shop', "Grace Hopper", "Zoë Ørsted")
SENSORS = ("attic", "boiler", "cellar")
_START_EPOCH = int(START.timestamp())

OnStatement = Callable[[str], None]


class Base(DeclarativeBase):
    pass


class Order(Base):
    """One order of a shop; ids grow with time."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str]
    total_cents: Mapped[int]
    placed_at: Mapped[str]  # ISO 8601 in UTC, "2026-03-01T08:00:37Z": sorts as it reads


class Reading(Base):
    """One temperature reading. Ids grow as readings *arrive*; some arrive late, so
    ``taken_at`` is not in id order, and readings taken in the same minute share it."""

    __tablename__ = "readings"
    __table_args__ = (Index("readings_by_sensor_and_time", "sensor", "taken_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sensor: Mapped[str]
    taken_at: Mapped[str]  # ISO 8601 in UTC
    celsius: Mapped[float]


def _iso(seconds: int) -> str:
    """START + ``seconds`` as ISO 8601 text (time.gmtime: twice as fast as datetime here)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_START_EPOCH + seconds))


def order_row(number: int) -> tuple[int, str, int, str]:
    """Order ``number`` (from 1): (id, customer, total_cents, placed_at)."""
    customer = CUSTOMERS[(number * 7) % len(CUSTOMERS)]
    return number, customer, 500 + (number * 7919) % 20_000, _iso(number * 37)


def reading_row(number: int, sensor: str | None = None) -> tuple[int, str, str, float]:
    """Reading ``number`` (from 1): (id, sensor, taken_at, celsius).

    Ten readings arrive per minute, round-robin over the sensors; every seventh one was
    taken three minutes before it arrived.
    """
    minute = (number - 1) // 10 - (3 if number % 7 == 0 else 0)
    sensor = sensor or SENSORS[(number - 1) % len(SENSORS)]
    return number, sensor, _iso(60 * minute), round(15 + (number * 37 % 100) / 10, 1)


def create_database(
    path: Path, *, orders: int = 0, readings: int = 0, sensors: tuple[str, ...] = SENSORS
) -> Path:
    """A fresh SQLite file at ``path`` holding ``orders`` orders and ``readings`` readings.

    ``sensors`` chooses the sensors the readings go round (``("boiler",)``: all one sensor).
    The file uses write-ahead logging, so readers and a writer do not block each other.
    """
    path = Path(path)
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        with connection:  # one transaction: fast
            connection.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?)",
                (order_row(n) for n in range(1, orders + 1)),
            )
            connection.executemany(
                "INSERT INTO readings VALUES (?, ?, ?, ?)",
                (reading_row(n, sensors[(n - 1) % len(sensors)]) for n in range(1, readings + 1)),
            )
    return path


def _insert(path: Path, sql: str, rows: Callable[[int], Iterable[tuple[Any, ...]]]) -> list[int]:
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection, connection:
        table = sql.split()[2]
        newest = connection.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
        added = list(rows(newest))
        connection.executemany(sql, added)
    return [row[0] for row in added]


def add_orders(path: Path, count: int) -> list[int]:
    """Insert the next ``count`` orders, as another program would; returns their ids."""
    return _insert(
        path,
        "INSERT INTO orders VALUES (?, ?, ?, ?)",
        lambda newest: (order_row(n) for n in range(newest + 1, newest + count + 1)),
    )


def add_readings(path: Path, count: int, sensor: str | None = None) -> list[int]:
    """Insert the next ``count`` readings (all of ``sensor``, if given); returns their ids."""
    return _insert(
        path,
        "INSERT INTO readings VALUES (?, ?, ?, ?)",
        lambda newest: (reading_row(n, sensor) for n in range(newest + 1, newest + count + 1)),
    )


def _statement_hook(latency: float, on_statement: OnStatement | None) -> Callable[[str], None]:
    def hook(sql: str) -> None:
        if on_statement is not None:
            on_statement(sql)
        if latency:
            time.sleep(latency)  # the thread that runs the statement waits, as for a network

    return hook


def async_engine(
    path: Path, *, latency: float = 0.0, on_statement: OnStatement | None = None
) -> AsyncEngine:
    """An asyncio engine for ``path``: aiosqlite runs each statement in a thread of its own."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    if latency or on_statement:
        hook = _statement_hook(latency, on_statement)

        @event.listens_for(engine.sync_engine, "connect")
        def _trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.run_async(lambda driver: driver.set_trace_callback(hook))

    return engine


def sync_engine(path: Path, *, latency: float = 0.0) -> Engine:
    """A classic (blocking) engine for ``path``: statements run in the calling thread."""
    engine = create_engine(f"sqlite:///{path}")
    if latency:
        hook = _statement_hook(latency, None)

        @event.listens_for(engine, "connect")
        def _trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_trace_callback(hook)

    return engine


@contextlib.asynccontextmanager
async def demo_database(
    readings: int = 30_000, add_every: float = 1.0
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Readings in a temporary folder, and a writer adding one per sensor every
    ``add_every`` seconds (paced) while the block runs: for ``course serve 08``."""
    folder = Path(tempfile.mkdtemp(prefix="lesson08-"))
    path = create_database(folder / "readings.db", readings=readings)
    engine = async_engine(path)

    async def writer() -> None:
        while True:
            await pace.sleep(add_every)
            await asyncio.to_thread(add_readings, path, len(SENSORS))

    task = asyncio.create_task(writer())
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of one query, read with plain sqlite3, outside any app."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql, params).fetchall()
