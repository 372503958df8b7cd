"""The Database: pragmas, one serialized writer, readers that see committed data."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from microfedi.store.database import Database


def _pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
    return (
        conn.execute("PRAGMA journal_mode").fetchone()[0],
        conn.execute("PRAGMA foreign_keys").fetchone()[0],
        conn.execute("PRAGMA synchronous").fetchone()[0],
    )


def _make_scratch_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE scratch (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")
    conn.execute("CREATE TABLE counter (value INTEGER NOT NULL)")
    conn.execute("INSERT INTO counter (value) VALUES (0)")


def _count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM scratch").fetchone()[0]


def _labels(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT label FROM scratch")}


@pytest.fixture
async def scratch_db(db: Database) -> Database:
    await db.write(_make_scratch_table)
    return db


async def test_writer_and_readers_use_wal_foreign_keys_and_normal_sync(db: Database) -> None:
    # synchronous: NORMAL is 1 (FULL would be 2).
    assert await db.write(_pragmas) == ("wal", 1, 1)
    assert await db.read(_pragmas) == ("wal", 1, 1)
    # WAL is a property of the file: a plain connection sees it too.
    with sqlite3.connect(db.path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_foreign_keys_are_enforced_on_writes(db: Database) -> None:
    def make_tables(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child (parent_id INTEGER NOT NULL REFERENCES parent (id))")

    await db.write(make_tables)
    with pytest.raises(sqlite3.IntegrityError):
        await db.write(lambda conn: conn.execute("INSERT INTO child (parent_id) VALUES (42)"))


async def test_readers_cannot_write(scratch_db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await scratch_db.read(lambda conn: conn.execute("INSERT INTO scratch (label) VALUES ('x')"))
    assert await scratch_db.read(_count) == 0


async def test_concurrent_writes_all_land_through_one_writer_thread(scratch_db: Database) -> None:
    writer_threads: set[int] = set()

    def increment(conn: sqlite3.Connection, label: str) -> None:
        writer_threads.add(threading.get_ident())
        # A read-modify-write in Python: two writers interleaving here would lose updates.
        value = conn.execute("SELECT value FROM counter").fetchone()[0]
        conn.execute("UPDATE counter SET value = ?", (value + 1,))
        conn.execute("INSERT INTO scratch (label) VALUES (?)", (label,))

    writes = 300
    await asyncio.gather(*(scratch_db.write(increment, f"row {n}") for n in range(writes)))

    assert await scratch_db.read(lambda conn: conn.execute("SELECT value FROM counter").fetchone()[0]) == writes
    assert await scratch_db.read(_labels) == {f"row {n}" for n in range(writes)}
    assert len(writer_threads) == 1
    assert threading.get_ident() not in writer_threads


async def test_a_failing_write_rolls_back_only_its_own_transaction(scratch_db: Database) -> None:
    def insert(conn: sqlite3.Connection, label: str) -> str:
        conn.execute("INSERT INTO scratch (label) VALUES (?)", (label,))
        if label == "doomed":
            raise ValueError("refused after inserting")
        return label

    labels = [f"row {n}" for n in range(20)] + ["doomed"] + [f"row {n}" for n in range(20, 40)]
    results = await asyncio.gather(*(scratch_db.write(insert, label) for label in labels), return_exceptions=True)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], ValueError)
    assert await scratch_db.read(_labels) == {label for label in labels if label != "doomed"}
    # The writer is healthy afterwards.
    await scratch_db.write(insert, "after")
    assert "after" in await scratch_db.read(_labels)


async def test_reads_see_committed_writes(scratch_db: Database) -> None:
    for n in range(1, 6):
        await scratch_db.write(lambda conn: conn.execute("INSERT INTO scratch (label) VALUES ('x')"))
        assert await scratch_db.read(_count) == n


async def test_reads_proceed_while_a_write_is_in_progress(scratch_db: Database) -> None:
    inside_write = threading.Event()
    release_write = threading.Event()

    def slow_insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO scratch (label) VALUES ('pending')")
        inside_write.set()
        assert release_write.wait(timeout=10), "the test never released the write"

    write = asyncio.ensure_future(scratch_db.write(slow_insert))
    try:
        assert await asyncio.to_thread(inside_write.wait, 10)
        # WAL: the reader is not blocked, and sees only what was committed.
        assert await asyncio.wait_for(scratch_db.read(_count), timeout=5) == 0
        assert not write.done()
    finally:
        release_write.set()
    await write
    assert await scratch_db.read(_count) == 1


def test_sync_writes_from_plain_threads(tmp_path: Path) -> None:
    with Database(tmp_path / "sync.sqlite3") as db:
        db.write_sync(_make_scratch_table)

        def worker(n: int) -> None:
            for i in range(25):
                db.write_sync(lambda conn: conn.execute("INSERT INTO scratch (label) VALUES (?)", (f"{n}-{i}",)))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert db.read_sync(_count) == 100


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "reopen.sqlite3"
    with Database(path) as db:
        db.write_sync(_make_scratch_table)
        db.write_sync(lambda conn: conn.execute("INSERT INTO scratch (label) VALUES ('kept')"))
    with Database(path) as db:
        assert db.read_sync(_labels) == {"kept"}


async def test_writing_to_a_closed_database_raises(tmp_path: Path) -> None:
    db = Database(tmp_path / "closed.sqlite3")
    with pytest.raises(RuntimeError, match="not open"):
        await db.write(_count)
    db.open()
    db.close()
    with pytest.raises(RuntimeError, match="not open"):
        await db.write(_count)
