"""Numbered schema migrations (`NNNN_name.sql`), applied at start-up.

`PRAGMA user_version` records the last one applied. Each runs in its own
transaction; two processes starting at once cannot both apply one, because the
second re-reads the version after taking the write lock.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from microfedi.errors import ActionError

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available_migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) for every migration shipped with the package, in order."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migration numbers must run 1..N without gaps, found {numbers}")
    return found


def current_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration newer than the database. Returns the names applied."""
    applied = []
    migrations = available_migrations()
    if current_version(conn) > len(migrations):
        raise ActionError(
            "this database was written by a newer microfedi "
            f"(schema {current_version(conn)}, this version knows {len(migrations)}); upgrade microfedi"
        )
    for number, name, sql in migrations:
        if current_version(conn) >= number:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if current_version(conn) >= number:  # another process got here first
                conn.execute("ROLLBACK")
                continue
            # executescript() would COMMIT first, so run the statements one by one.
            for statement in _split_statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(name)
    return applied


def _split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (triggers keep their inner semicolons)."""
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise RuntimeError(f"incomplete SQL statement in migration: {pending.strip()[:80]}")
    return statements
