"""Schema migrations: applied once, in order, safe against a racing process, and
refused when the database is newer than this microfedi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import microfedi
from microfedi.store.database import Database, connect
from microfedi.errors import ActionError
from microfedi.store.migrations import (
    _split_statements,
    apply_migrations,
    available_migrations,
    current_version,
)

ALL_NAMES = [name for _, name, _ in available_migrations()]
# The child processes must import the microfedi under test, whichever that is.
SOURCE_ROOT = Path(microfedi.__file__).resolve().parents[1]


def _tables(path: Path) -> set[str]:
    conn = connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_migrations_apply_once_and_bump_user_version(tmp_path: Path) -> None:
    conn = connect(tmp_path / "fresh.sqlite3")
    try:
        assert current_version(conn) == 0
        assert apply_migrations(conn) == ALL_NAMES
        assert current_version(conn) == len(ALL_NAMES)
        assert apply_migrations(conn) == []
        assert current_version(conn) == len(ALL_NAMES)
    finally:
        conn.close()
    assert {"meta", "domains", "accounts", "instance_actors"} <= _tables(tmp_path / "fresh.sqlite3")


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [number for number, _, _ in available_migrations()] == list(range(1, len(ALL_NAMES) + 1))


def test_reopening_a_database_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "reopen.sqlite3"
    with Database(path) as db:
        db.write_sync(lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('probe', 'kept')"))
    with Database(path) as db:
        assert db.read_sync(lambda conn: conn.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone()[0]) == "kept"


def test_connections_racing_to_migrate_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite3"
    racers = 6
    start = threading.Barrier(racers)
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def race() -> None:
        conn = connect(path)
        try:
            start.wait()
            applied.append(apply_migrations(conn))
        except BaseException as exc:  # collected: a double apply fails with "table exists"
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(name for names in applied for name in names) == sorted(ALL_NAMES)


_MIGRATE_WHEN_TOLD = textwrap.dedent(
    """
    import json, sys
    from microfedi.store.database import connect
    from microfedi.store.migrations import apply_migrations
    conn = connect(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(apply_migrations(conn)), flush=True)
    """
)


def test_processes_racing_to_migrate_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite3"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_WHEN_TOLD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
        )
        for _ in range(3)
    ]
    try:
        for process in processes:  # all started and connected before any begins
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=30) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    applied = [json.loads(stdout) for stdout, _ in outputs]
    assert sorted(name for names in applied for name in names) == sorted(ALL_NAMES)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite3"
    newer = len(ALL_NAMES) + 1
    conn = connect(path)
    conn.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(ActionError, match=rf"newer microfedi \(schema {newer}, this version knows {len(ALL_NAMES)}\)"):
        apply_migrations(conn)
    assert current_version(conn) == newer
    conn.close()

    with pytest.raises(ActionError, match="upgrade microfedi"):
        Database(path).open()
    assert _tables(path) == set()


def test_statements_split_keeps_trigger_bodies_whole() -> None:
    script = textwrap.dedent(
        """
        -- a comment; with a semicolon
        CREATE TABLE t (x INTEGER);
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
            UPDATE t SET x = x + 1;
            UPDATE t SET x = x + 2;
        END;
        INSERT INTO t VALUES ('a;b');
        """
    )
    statements = _split_statements(script)
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    assert statements[2] == "INSERT INTO t VALUES ('a;b');"


def test_an_incomplete_statement_is_reported() -> None:
    with pytest.raises(RuntimeError, match="incomplete SQL statement"):
        _split_statements("CREATE TABLE t (x INTEGER);\nCREATE TABLE u (y INTEGER)\n")
