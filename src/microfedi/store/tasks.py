"""Queries for the task loop: the `tasks` queue and the `hosts` circuit state.

Only SQL lives here; what to claim, when to retry and when a host is down is
decided in `microfedi.tasks`. Every function takes the connection of the
caller's transaction, and the time `now` so one transaction sees one clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass

from microfedi.store.ids import new_id

QUEUED, RUNNING, DONE, DEAD = "queued", "running", "done", "dead"


@dataclass(frozen=True)
class TaskRow:
    id: int
    kind: str
    payload: str
    dedupe_key: str | None
    priority: int
    host: str | None
    state: str
    attempts: int
    max_attempts: int
    run_at: float
    locked_until: float | None
    last_error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    deadline: float


_TASK_COLUMNS = (
    "id, kind, payload, dedupe_key, priority, host, state, attempts, max_attempts, run_at, "
    "locked_until, last_error, created_at, updated_at, finished_at, deadline"
)


def _task(row: sqlite3.Row) -> TaskRow:
    return TaskRow(*row)


@dataclass(frozen=True)
class NewTaskRow:
    """A task about to be inserted, with every default already resolved."""

    kind: str
    payload: str
    dedupe_key: str | None
    priority: int
    host: str | None
    max_attempts: int
    run_at: float
    deadline: float
    created_at: float

    def values(self) -> tuple[object, ...]:
        return (
            new_id(self.created_at),
            self.kind,
            self.payload,
            self.dedupe_key,
            self.priority,
            self.host,
            self.max_attempts,
            self.run_at,
            self.created_at,
            self.created_at,
            self.deadline,
        )


_INSERT = (
    "INSERT INTO tasks (id, kind, payload, dedupe_key, priority, host, max_attempts, run_at, "
    "created_at, updated_at, deadline) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


def insert_task(conn: sqlite3.Connection, task: NewTaskRow) -> int | None:
    """Insert one task; None when its dedupe key is taken already."""
    row = conn.execute(_INSERT + " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id", task.values()).fetchone()
    return row[0] if row else None


def insert_tasks(conn: sqlite3.Connection, tasks: Iterable[NewTaskRow]) -> int:
    """Insert many tasks in one statement; returns how many were new (not deduplicated)."""
    before = conn.total_changes
    conn.executemany(_INSERT + " ON CONFLICT (dedupe_key) DO NOTHING", (t.values() for t in tasks))
    return conn.total_changes - before


def ensure_periodic_task(conn: sqlite3.Connection, task: NewTaskRow) -> None:
    """Make sure the task with this dedupe key is queued or running.

    A missing row is inserted; a finished one (killed by hand, say) is queued
    again; a queued or running one is left alone, keeping its schedule.
    """
    conn.execute(
        _INSERT + " ON CONFLICT (dedupe_key) DO UPDATE SET state = 'queued', attempts = 0, "
        "run_at = excluded.run_at, deadline = excluded.deadline, priority = excluded.priority, "
        "locked_until = NULL, finished_at = NULL, updated_at = excluded.updated_at "
        "WHERE state IN ('done', 'dead')",
        task.values(),
    )


# ---------------------------------------------------------------- claiming


_RELEASE = "UPDATE tasks SET state = 'queued', locked_until = NULL, updated_at = ? WHERE state = 'running'"


def release_lapsed_leases(conn: sqlite3.Connection, now: float) -> int:
    """Queue again the running tasks whose lease ran out (their process died).

    The attempt they were on counts: a task that kills its process every
    time still runs out of attempts.
    """
    return conn.execute(_RELEASE + " AND locked_until < ?", (now, now)).rowcount


def release_all_leases(conn: sqlite3.Connection, now: float) -> int:
    """Queue again every running task: for a runner that knows no other runner is alive."""
    return conn.execute(_RELEASE, (now,)).rowcount


def _placeholders(values: Collection[object]) -> str:
    return ",".join("?" * len(values))


def due_tasks(
    conn: sqlite3.Connection,
    now: float,
    priority: int,
    kinds: Collection[str],
    excluded_hosts: Collection[str] = (),
    excluded_ids: Collection[int] = (),
) -> Iterator[tuple[int, str, str | None]]:
    """(id, kind, host) of queued tasks of one priority that may run now, oldest due first.

    Only `kinds` are considered; tasks for `excluded_hosts` and `excluded_ids`
    are skipped in SQL. The caller iterates until it has what it can take.
    """
    if not kinds:
        return iter(())
    sql = (
        # INDEXED BY: statistics gathered while the queue was empty can talk
        # SQLite into sorting the whole backlog on every claim.
        "SELECT id, kind, host FROM tasks INDEXED BY tasks_claim "
        "WHERE state = 'queued' AND priority = ? AND run_at <= ? "
        f"AND kind IN ({_placeholders(kinds)})"
    )
    params: list[object] = [priority, now, *kinds]
    if excluded_hosts:
        sql += f" AND (host IS NULL OR host NOT IN ({_placeholders(excluded_hosts)}))"
        params.extend(excluded_hosts)
    if excluded_ids:
        sql += f" AND id NOT IN ({_placeholders(excluded_ids)})"
        params.extend(excluded_ids)
    return (tuple(row) for row in conn.execute(sql + " ORDER BY run_at", params))


def mark_running(conn: sqlite3.Connection, leases: Sequence[tuple[int, float]], now: float) -> list[TaskRow]:
    """Claim tasks: (id, locked_until) pairs become running with one more attempt."""
    claimed = []
    for task_id, locked_until in leases:
        row = conn.execute(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1, locked_until = ?, updated_at = ? "
            f"WHERE id = ? AND state = 'queued' RETURNING {_TASK_COLUMNS}",
            (locked_until, now, task_id),
        ).fetchone()
        if row is not None:
            claimed.append(_task(row))
    return claimed


@dataclass(frozen=True)
class Completion:
    """What became of one run of a claimed task; applied in batches.

    `attempt` is the attempts value of the claim: a completion only applies
    while the task is still running that attempt, so a run whose lease lapsed
    and was claimed again cannot overwrite the newer run's state.
    """

    task_id: int
    attempt: int
    state: str
    attempts: int
    run_at: float | None = None
    deadline: float | None = None
    error: str | None = None
    keep_error: bool = False

    @classmethod
    def done(cls, task_id: int, attempt: int) -> Completion:
        return cls(task_id, attempt, DONE, attempt)

    @classmethod
    def retry(cls, task_id: int, attempt: int, run_at: float, error: str) -> Completion:
        return cls(task_id, attempt, QUEUED, attempt, run_at=run_at, error=error)

    @classmethod
    def dead(cls, task_id: int, attempt: int, error: str) -> Completion:
        return cls(task_id, attempt, DEAD, attempt, error=error)

    @classmethod
    def released(cls, task_id: int, attempt: int) -> Completion:
        """Back to the queue as if this attempt never started (graceful shutdown)."""
        return cls(task_id, attempt, QUEUED, attempt - 1, keep_error=True)

    @classmethod
    def rescheduled(cls, task_id: int, attempt: int, run_at: float, deadline: float, error: str | None) -> Completion:
        """A periodic task queued for its next run, with a fresh count of attempts."""
        return cls(task_id, attempt, QUEUED, 0, run_at=run_at, deadline=deadline, error=error)


def apply_completions(conn: sqlite3.Connection, completions: Iterable[Completion], now: float) -> None:
    conn.executemany(
        "UPDATE tasks SET state = :state, attempts = :attempts, run_at = COALESCE(:run_at, run_at), "
        "deadline = COALESCE(:deadline, deadline), "
        "last_error = CASE WHEN :keep_error THEN last_error ELSE :error END, "
        "locked_until = NULL, updated_at = :now, "
        "finished_at = CASE WHEN :state IN ('done', 'dead') THEN :now END "
        "WHERE id = :task_id AND state = 'running' AND attempts = :attempt",
        (
            {
                "state": c.state,
                "attempts": c.attempts,
                "run_at": c.run_at,
                "deadline": c.deadline,
                "error": c.error,
                "keep_error": c.keep_error,
                "now": now,
                "task_id": c.task_id,
                "attempt": c.attempt,
            }
            for c in completions
        ),
    )


# ---------------------------------------------------------------- hosts


@dataclass(frozen=True)
class HostRow:
    host: str
    consecutive_failures: int
    down_until: float | None
    last_error: str | None
    last_success_at: float | None
    last_failure_at: float | None


def troubled_hosts(conn: sqlite3.Connection) -> list[HostRow]:
    """Hosts with failures since their last success, or an open circuit."""
    return [
        HostRow(*r)
        for r in conn.execute(
            "SELECT host, consecutive_failures, down_until, last_error, last_success_at, last_failure_at "
            "FROM hosts WHERE consecutive_failures > 0 OR down_until IS NOT NULL ORDER BY host"
        )
    ]


def open_circuits(conn: sqlite3.Connection) -> list[HostRow]:
    """Hosts whose circuit is open (down) or half-open (waiting for a probe to succeed)."""
    return [row for row in troubled_hosts(conn) if row.down_until is not None]


def save_hosts(conn: sqlite3.Connection, rows: Iterable[HostRow]) -> None:
    conn.executemany(
        "INSERT INTO hosts (host, consecutive_failures, down_until, last_error, last_success_at, last_failure_at) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT (host) DO UPDATE SET "
        "consecutive_failures = excluded.consecutive_failures, down_until = excluded.down_until, "
        "last_error = COALESCE(excluded.last_error, last_error), "
        "last_success_at = COALESCE(excluded.last_success_at, last_success_at), "
        "last_failure_at = COALESCE(excluded.last_failure_at, last_failure_at)",
        (
            (r.host, r.consecutive_failures, r.down_until, r.last_error, r.last_success_at, r.last_failure_at)
            for r in rows
        ),
    )


def defer_host_tasks(conn: sqlite3.Connection, host: str, until: float) -> int:
    """Move the queued tasks of a down host to `until`, so claims stop scanning them."""
    return conn.execute(
        "UPDATE tasks SET run_at = ? WHERE host = ? AND state = 'queued' AND run_at < ?",
        (until, host, until),
    ).rowcount


def undefer_host_tasks(conn: sqlite3.Connection, host: str, deferred_to: float, now: float) -> int:
    """Let the tasks `defer_host_tasks` moved to `deferred_to` run now (the host came back early)."""
    return conn.execute(
        "UPDATE tasks SET run_at = ? WHERE host = ? AND state = 'queued' AND run_at = ?",
        (now, host, deferred_to),
    ).rowcount


# ---------------------------------------------------------------- upkeep


def purge_finished(conn: sqlite3.Connection, done_before: float, dead_before: float, limit: int) -> int:
    """Delete up to `limit` done tasks finished before `done_before` and dead ones before `dead_before`."""
    return conn.execute(
        "DELETE FROM tasks WHERE id IN ("
        "SELECT id FROM tasks WHERE state = 'done' AND finished_at < ? "
        "UNION ALL SELECT id FROM tasks WHERE state = 'dead' AND finished_at < ? LIMIT ?)",
        (done_before, dead_before, limit),
    ).rowcount


def expire_tasks_of_down_hosts(conn: sqlite3.Connection, now: float) -> int:
    """Kill queued tasks past their deadline whose host is down: they would never run in time."""
    return conn.execute(
        "UPDATE tasks SET state = 'dead', finished_at = :now, updated_at = :now, "
        "last_error = 'host ' || tasks.host || ' was still down at the retry deadline'"
        " || COALESCE('; last error: ' || COALESCE(tasks.last_error, hosts.last_error), '') "
        "FROM hosts WHERE tasks.host = hosts.host AND hosts.down_until > :now "
        "AND tasks.state = 'queued' AND tasks.deadline < :now",
        {"now": now},
    ).rowcount


# ---------------------------------------------------------------- inspection


@dataclass
class KindCounts:
    kind: str
    queued: int = 0
    running: int = 0
    done_recently: int = 0
    retrying: int = 0
    dead: int = 0
    # When the oldest queued task that is due became due (None: none is due).
    oldest_due_at: float | None = None


def counts_by_kind(conn: sqlite3.Connection, now: float, done_since: float) -> dict[str, KindCounts]:
    """Per kind: queued, running, done since `done_since`, retrying, dead, oldest due."""
    counts: dict[str, KindCounts] = {}

    def of(kind: str) -> KindCounts:
        return counts.setdefault(kind, KindCounts(kind))

    for kind, queued, retrying, oldest in conn.execute(
        "SELECT kind, count(*), sum(attempts > 0), min(CASE WHEN run_at <= ? THEN run_at END) "
        "FROM tasks WHERE state = 'queued' GROUP BY kind",
        (now,),
    ):
        entry = of(kind)
        entry.queued, entry.retrying, entry.oldest_due_at = queued, retrying, oldest
    for kind, state, number in conn.execute(
        "SELECT kind, state, count(*) FROM tasks WHERE state IN ('running', 'dead') GROUP BY kind, state"
    ):
        setattr(of(kind), state, number)
    for kind, number in conn.execute(
        "SELECT kind, count(*) FROM tasks WHERE state = 'done' AND finished_at >= ? GROUP BY kind", (done_since,)
    ):
        of(kind).done_recently = number
    return dict(sorted(counts.items()))


def get_task(conn: sqlite3.Connection, task_id: int) -> TaskRow | None:
    row = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return _task(row) if row else None


def dead_tasks(conn: sqlite3.Connection, kind: str | None, limit: int) -> list[TaskRow]:
    """Dead tasks, the most recently finished first."""
    where, params = ("AND kind = ?", [kind]) if kind else ("", [])
    return [
        _task(r)
        for r in conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state = 'dead' {where} ORDER BY finished_at DESC LIMIT ?",
            [*params, limit],
        )
    ]


def requeue_dead(conn: sqlite3.Connection, now: float, *, task_id: int | None = None, kind: str | None = None) -> int:
    """Queue dead tasks again with fresh attempts and a fresh retry window.

    The window keeps its length (deadline - created_at) but starts now.
    """
    sql = (
        "UPDATE tasks SET state = 'queued', attempts = 0, run_at = :now, locked_until = NULL, "
        "finished_at = NULL, updated_at = :now, deadline = :now + (deadline - created_at) WHERE state = 'dead'"
    )
    if task_id is not None:
        sql += " AND id = :task_id"
    if kind is not None:
        sql += " AND kind = :kind"
    return conn.execute(sql, {"now": now, "task_id": task_id, "kind": kind}).rowcount
