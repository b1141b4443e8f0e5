"""course_app.demos.sample_db: lesson 08's SQLite files, their engines, and the demo database."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from course_app.demos.sample_db import (
    CUSTOMERS,
    SENSORS,
    Order,
    Reading,
    add_orders,
    add_readings,
    async_engine,
    create_database,
    demo_database,
    order_row,
    query,
    reading_row,
    sync_engine,
)
from course_app.runtime import pace


def test_create_database_fills_both_tables_with_the_same_rows_every_time(tmp_path: Path) -> None:
    path = create_database(tmp_path / "a.db", orders=1000, readings=600)
    again = create_database(tmp_path / "b.db", orders=1000, readings=600)
    for table in ("orders", "readings"):
        rows = query(path, f"SELECT * FROM {table} ORDER BY id")
        assert rows == query(again, f"SELECT * FROM {table} ORDER BY id")
    assert query(path, "SELECT * FROM orders ORDER BY id") == [order_row(n) for n in range(1, 1001)]
    assert query(path, "SELECT * FROM readings ORDER BY id") == [
        reading_row(n) for n in range(1, 601)
    ]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    # Re-creating a file starts from scratch.
    create_database(path, orders=3)
    assert query(path, "SELECT count(*) FROM orders") == [(3,)]
    assert query(path, "SELECT count(*) FROM readings") == [(0,)]


def test_the_data_has_what_the_lesson_needs(tmp_path: Path) -> None:
    path = create_database(tmp_path / "shop.db", orders=100, readings=300)
    assert {row[0] for row in query(path, "SELECT customer FROM orders")} == set(CUSTOMERS)
    assert {row[0] for row in query(path, "SELECT sensor FROM readings")} == set(SENSORS)
    by_id = [row[0] for row in query(path, "SELECT taken_at FROM readings ORDER BY id")]
    assert by_id != sorted(by_id), "some readings arrive late"
    ties = query(
        path,
        "SELECT count(*) FROM readings GROUP BY sensor, taken_at HAVING count(*) > 1",
    )
    assert ties, "readings of one sensor share a taken_at"
    one_sensor = create_database(tmp_path / "boiler.db", readings=50, sensors=("boiler",))
    assert query(one_sensor, "SELECT DISTINCT sensor FROM readings") == [("boiler",)]


def test_sqlalchemy_models_read_the_file(tmp_path: Path) -> None:
    path = create_database(tmp_path / "shop.db", orders=5, readings=5)
    engine = sync_engine(path)
    with Session(engine) as session:
        order = session.get(Order, 3)
        reading = session.get(Reading, 3)
        plan = session.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT id FROM readings "
                "WHERE sensor = 'attic' ORDER BY taken_at, id"
            )
        ).all()
    engine.dispose()
    assert order is not None and reading is not None
    assert (order.id, order.customer, order.total_cents, order.placed_at) == order_row(3)
    assert (reading.id, reading.sensor, reading.taken_at, reading.celsius) == reading_row(3)
    assert "readings_by_sensor_and_time" in str(plan)


def test_add_rows_continues_the_ids_as_another_writer_would(tmp_path: Path) -> None:
    path = create_database(tmp_path / "shop.db", orders=10, readings=10)
    assert add_orders(path, 2) == [11, 12]
    assert add_readings(path, 3, sensor="attic") == [11, 12, 13]
    assert query(path, "SELECT * FROM orders WHERE id > 10") == [order_row(11), order_row(12)]
    assert query(path, "SELECT sensor FROM readings WHERE id > 10") == [("attic",)] * 3


def test_async_engine_runs_statements_off_the_event_loop_thread(tmp_path: Path) -> None:
    path = create_database(tmp_path / "shop.db", orders=10)
    seen: list[tuple[str, str]] = []
    engine = async_engine(
        path, on_statement=lambda sql: seen.append((threading.current_thread().name, sql))
    )

    async def main() -> tuple[int, str]:
        async with async_sessionmaker(engine)() as session:
            count = await session.scalar(select(func.count()).where(Order.id > 7))
        await engine.dispose()
        return count or 0, threading.current_thread().name

    count, loop_thread = asyncio.run(main())
    assert count == 3
    statements = [sql for _, sql in seen]
    assert any("orders.id > 7" in sql for sql in statements), statements
    assert all(name != loop_thread for name, _ in seen)


def test_latency_waits_in_the_thread_that_runs_the_statement(tmp_path: Path) -> None:
    path = create_database(tmp_path / "shop.db", orders=10)
    engine = async_engine(path, latency=0.2)
    beats = 0

    async def beat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    async def main() -> None:
        ticker = asyncio.create_task(beat())
        async with async_sessionmaker(engine)() as session:
            await session.scalar(select(func.count()).select_from(Order))
        ticker.cancel()
        await engine.dispose()

    asyncio.run(main())
    assert beats > 0, "the event loop ran while the async engine's statement waited"

    blocking = sync_engine(path, latency=0.2)
    started = time.perf_counter()
    with blocking.connect() as connection:
        connection.execute(select(func.count()).select_from(Order))
    blocking.dispose()
    assert time.perf_counter() - started >= 0.2, "the sync engine waited in this thread"


def test_demo_database_adds_readings_and_cleans_up() -> None:
    async def main() -> tuple[int, int, Path]:
        pace.set_pace(pace.TEST_PACE)
        try:
            async with demo_database(readings=30, add_every=0.5) as sessions:
                async with sessions() as session:
                    first = await session.scalar(select(func.max(Reading.id))) or 0
                    folder = Path(session.bind.url.database).parent  # type: ignore[union-attr]
                newest = first
                for _ in range(500):
                    await asyncio.sleep(0.01)
                    async with sessions() as session:
                        newest = await session.scalar(select(func.max(Reading.id))) or 0
                    if newest > first:
                        break
        finally:
            pace.set_pace(None)
        return first, newest, folder

    first, newest, folder = asyncio.run(main())
    assert first == 30
    assert newest >= 30 + len(SENSORS)
    assert not folder.exists()
