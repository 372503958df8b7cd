"""The SQLite database: one writer connection, a small pool of readers.

Every write is a function `fn(conn, *args)` shipped to a single writer thread
and run inside one transaction, so writes are serialized inside the process
and "database is locked" cannot happen between our own connections. Reads run
on a small pool of reader threads, each with its own connection; WAL mode lets
them proceed while a write is in progress. This is the shape Datasette uses.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from microfedi.store.migrations import apply_migrations

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
READER_THREADS = 3


class Connection(sqlite3.Connection):
    """A connection that can run callbacks once the current transaction commits.

    Code inside a write (enqueueing a task, say) uses `conn.after_commit(fn)` to
    act only when its rows are visible to everyone (waking the task runner).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commit_callbacks: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.commit_callbacks.append(callback)


def connect(path: Path | str, *, readonly: bool = False) -> Connection:
    """Open a connection with the pragmas every connection needs."""
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
        factory=Connection,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


def run_in_transaction(conn: Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run fn(conn, *args) inside BEGIN IMMEDIATE … COMMIT, rolling back on error.

    Callbacks registered with `conn.after_commit` run after a successful COMMIT
    and are dropped on rollback.
    """
    conn.commit_callbacks.clear()
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        conn.commit_callbacks.clear()
        raise
    conn.execute("COMMIT")
    callbacks, conn.commit_callbacks = conn.commit_callbacks, []
    for callback in callbacks:
        callback()
    return result


class Database:
    """The one SQLite file of an install, opened for a process.

    `await db.write(fn, *args)` runs fn(conn, *args) in the writer thread in a
    transaction; `await db.read(fn, *args)` runs it on a reader connection.
    `db.write_sync` / `db.read_sync` do the same from plain threads (the CLI).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._writer_queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._writer_thread: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(
            max_workers=READER_THREADS, thread_name_prefix="microfedi-db-read"
        )
        self._local = threading.local()
        self._reader_conns: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def open(self) -> None:
        """Create the file if needed, switch it to WAL and apply migrations."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        conn.execute("PRAGMA journal_mode = WAL")
        apply_migrations(conn)
        self._writer_conn = conn
        self._writer_thread = threading.Thread(
            target=self._writer_loop, name="microfedi-db-write", daemon=True
        )
        self._writer_thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer_thread is not None:
            self._writer_queue.put(None)
            self._writer_thread.join(timeout=10)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    def _writer_loop(self) -> None:
        conn = self._writer_conn
        while True:
            item = self._writer_queue.get()
            if item is None:
                break
            fn, args, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(run_in_transaction(conn, fn, *args))
            except BaseException as exc:  # handed to the caller, who decides
                future.set_exception(exc)
        try:
            conn.execute("PRAGMA optimize")
        except sqlite3.OperationalError:
            pass  # another process is writing: the statistics can wait for the next close
        conn.close()

    def _reader(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    def _submit_write(self, fn: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
        if self._writer_thread is None or self._closed:
            raise RuntimeError("database is not open")
        future: Future[T] = Future()
        self._writer_queue.put((fn, args, future))
        return future

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) in one transaction on the writer connection."""
        return await asyncio.wrap_future(self._submit_write(fn, args))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) on a reader connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader(), *args))

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._submit_write(fn, args).result()

    def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._readers.submit(lambda: fn(self._reader(), *args)).result()

    def __enter__(self) -> Database:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
