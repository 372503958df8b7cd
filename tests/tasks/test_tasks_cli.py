"""`microfedi tasks`, `tasks dead` and `tasks retry`, run with click's CliRunner."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from microfedi.config import DATABASE_FILE
from microfedi.store import tasks as q
from microfedi.store.database import Connection, Database
from microfedi.tasks.queue import NewTask, enqueue_many
from microfedi.tasks.registry import Priority, Registry, TaskContext

Cli = Callable[..., Result]


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


@pytest.fixture
def install(cli: Cli, data_dir: Path) -> Iterator[Database]:
    """An initialised data dir, and its database opened beside the CLI."""
    assert cli("init").exit_code == 0
    with Database(data_dir / DATABASE_FILE) as db:
        yield db


def add_tasks(db: Database, kind_name: str, count: int, host: str | None = None, **columns: Any) -> list[int]:
    kind = Registry().task_kind(kind_name, priority=Priority.DELIVERY)(handler)

    def write(conn: Connection) -> list[int]:
        before = {r[0] for r in conn.execute("SELECT id FROM tasks")}
        enqueue_many(conn, kind, [NewTask({"n": n}, host=host) for n in range(count)])
        ids = sorted({r[0] for r in conn.execute("SELECT id FROM tasks")} - before)
        if columns:
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.executemany(f"UPDATE tasks SET {assignments} WHERE id = ?", [(*columns.values(), i) for i in ids])
        return ids

    return db.write_sync(write)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def refused(result: Result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    return result.stderr.strip()


def test_an_empty_queue(install: Database, cli: Cli) -> None:
    assert ok(cli("tasks")) == "no tasks yet\nno hosts down\n"
    assert ok(cli("tasks", "dead")) == "no dead tasks\n"


def test_the_status_counts_each_kind_and_lists_hosts_down(install: Database, cli: Cli) -> None:
    now = time.time()
    add_tasks(install, "deliver", 3, host="a.example", run_at=now - 125)  # due for 2m05s
    add_tasks(install, "deliver", 2, host="a.example", attempts=2, run_at=now + 60)  # retrying later
    add_tasks(install, "deliver", 1, host="a.example", state="running", attempts=1)
    add_tasks(install, "deliver", 4, host="a.example", state="done", finished_at=now - 60)
    add_tasks(install, "deliver", 1, host="a.example", state="done", finished_at=now - 7200)  # not in the last hour
    add_tasks(install, "inbox", 2, state="dead", attempts=8, finished_at=now - 5, last_error="bad signature")
    install.write_sync(
        q.save_hosts,
        [
            q.HostRow("down.example", 6, now + 250, "connection refused", None, now),
            q.HostRow("probe.example", 5, now - 1, "HTTP 503", None, now),
        ],
    )
    lines = ok(cli("tasks")).splitlines()
    assert lines[0].split() == ["kind", "queued", "running", "done", "1h", "retrying", "dead", "oldest", "due"]
    assert lines[1].split() == ["deliver", "5", "1", "4", "2", "0", "2m05s"]
    assert lines[2].split() == ["inbox", "0", "0", "0", "0", "2", "-"]
    assert lines[3] == "hosts down (2):"
    assert re.fullmatch(r"  down\.example  down for 4m\d\ds more, 6 failures in a row: connection refused", lines[4])
    assert lines[5] == "  probe.example  back up for a probe, 5 failures in a row: HTTP 503"


def test_dead_tasks_are_listed_with_their_errors(install: Database, cli: Cli) -> None:
    now = time.time()
    [old] = add_tasks(install, "deliver", 1, host="gone.example", state="dead", attempts=1, finished_at=now - 9,
                      last_error="HTTP 410 Gone")  # fmt: skip
    [new] = add_tasks(install, "inbox", 1, state="dead", attempts=8, finished_at=now - 1, last_error="KeyError: 'actor'")
    lines = ok(cli("tasks", "dead")).splitlines()
    assert lines[0].split() == ["id", "kind", "host", "attempts", "last", "error"]
    assert lines[1].split() == [str(new), "inbox", "-", "8", "KeyError:", "'actor'"]
    assert lines[2].split() == [str(old), "deliver", "gone.example", "1", "HTTP", "410", "Gone"]
    assert ok(cli("tasks", "dead", "--kind", "deliver", "--limit", "5")).splitlines()[1:] == [lines[2]]
    assert len(ok(cli("tasks", "dead", "--limit", "1")).splitlines()) == 2


def test_retry_requeues_one_dead_task_or_all(install: Database, cli: Cli) -> None:
    now = time.time()
    dead = add_tasks(install, "deliver", 3, host="a.example", state="dead", attempts=20, finished_at=now,
                     created_at=now - 3 * 86400, deadline=now - 86400, last_error="HTTP 500")  # fmt: skip
    [queued] = add_tasks(install, "deliver", 1, host="a.example")
    add_tasks(install, "inbox", 1, state="dead", finished_at=now)

    assert ok(cli("tasks", "retry", str(dead[0]))) == f"requeued task {dead[0]}\n"
    task = install.read_sync(q.get_task, dead[0])
    assert (task.state, task.attempts, task.finished_at) == ("queued", 0, None)
    assert task.deadline == pytest.approx(time.time() + 2 * 86400, abs=5)  # a fresh window as long as the first
    assert ok(cli("tasks", "retry", "--all-dead", "--kind", "deliver")) == "requeued 2 dead task(s) of kind deliver\n"
    assert ok(cli("tasks", "retry", "--all-dead")) == "requeued 1 dead task(s)\n"
    assert "queued" in refused(cli("tasks", "retry", str(queued)))
    assert "no task 12345" in refused(cli("tasks", "retry", "12345"))
    assert "--all-dead" in refused(cli("tasks", "retry"))
    assert "--all-dead" in refused(cli("tasks", "retry", "--kind", "deliver", str(queued)))


def test_tasks_needs_an_initialised_data_dir(cli: Cli) -> None:
    assert "microfedi init" in refused(cli("tasks"))
