"""Putting work in the queue, and waking the runner when it is there.

`enqueue` and `enqueue_many` run inside the caller's write transaction, so a
task commits atomically with the effects that made it necessary (the inbox
row and the task that processes it; a post and its deliveries). Once the
transaction has committed, the runner of this process is woken at once;
another process (the CLI) has no runner, and the server's runner finds the
task when it next polls, within a second or so.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from microfedi.errors import ActionError
from microfedi.store import tasks as q
from microfedi.store.database import Connection, Database
from microfedi.tasks.registry import Priority, TaskKind, TaskKindError, registry

_wakers: set[Callable[[], None]] = set()
_wakers_lock = threading.Lock()


def add_waker(waker: Callable[[], None]) -> None:
    """Call `waker` (from the writer thread: it must be thread-safe) after commits that enqueued."""
    with _wakers_lock:
        _wakers.add(waker)


def remove_waker(waker: Callable[[], None]) -> None:
    with _wakers_lock:
        _wakers.discard(waker)


def wake_runners() -> None:
    with _wakers_lock:
        wakers = list(_wakers)
    for waker in wakers:
        waker()


def _wake_after_commit(conn: Connection) -> None:
    # One wake per transaction is enough, however many tasks it enqueued.
    if wake_runners not in conn.commit_callbacks:
        conn.after_commit(wake_runners)


@dataclass(frozen=True)
class NewTask:
    """One task of a fan-out for `enqueue_many`."""

    payload: dict[str, Any]
    host: str | None = None
    dedupe_key: str | None = None
    run_at: float | None = None


def _resolve(kind: TaskKind | str) -> TaskKind:
    resolved = kind if isinstance(kind, TaskKind) else registry.get(kind)
    if resolved.periodic:
        raise TaskKindError(f"task kind {resolved.name!r} is periodic: the runner schedules it, do not enqueue it")
    return resolved


def task_row(kind: TaskKind, task: NewTask, priority: Priority | None, now: float) -> q.NewTaskRow:
    """The row for a new task of `kind`, with the kind's defaults filled in."""
    if kind.per_host and not task.host:
        raise TaskKindError(f"task kind {kind.name!r} is per_host: give the remote host")
    run_at = now if task.run_at is None else task.run_at
    return q.NewTaskRow(
        kind=kind.name,
        payload=json.dumps(task.payload, separators=(",", ":"), ensure_ascii=False),
        dedupe_key=task.dedupe_key,
        priority=int(kind.priority if priority is None else Priority(priority)),
        host=task.host.lower() if task.host else None,
        max_attempts=kind.max_attempts,
        run_at=run_at,
        deadline=max(now, run_at) + kind.retry_window,
        created_at=now,
    )


def enqueue(
    conn: Connection,
    kind: TaskKind | str,
    payload: dict[str, Any],
    *,
    dedupe_key: str | None = None,
    host: str | None = None,
    run_at: float | None = None,
    priority: Priority | None = None,
) -> int | None:
    """Queue one task in the caller's write transaction; its id, or None if `dedupe_key` is taken.

    A dedupe key stays taken while its row exists: done tasks are purged after
    a week, dead ones after a month. `run_at` (Unix time) delays the first run;
    `priority` overrides the kind's.
    """
    row = task_row(_resolve(kind), NewTask(payload, host, dedupe_key, run_at), priority, time.time())
    task_id = q.insert_task(conn, row)
    if task_id is not None:
        _wake_after_commit(conn)
    return task_id


def enqueue_many(
    conn: Connection,
    kind: TaskKind | str,
    items: Iterable[NewTask | Mapping[str, Any]],
    *,
    priority: Priority | None = None,
) -> int:
    """Queue a fan-out in the caller's write transaction; returns how many were new.

    Each item is a `NewTask` or a mapping with its fields (`payload`, and
    optionally `host`, `dedupe_key`, `run_at`).
    """
    resolved = _resolve(kind)
    now = time.time()
    tasks = (item if isinstance(item, NewTask) else NewTask(**item) for item in items)
    added = q.insert_tasks(conn, [task_row(resolved, task, priority, now) for task in tasks])
    if added:
        _wake_after_commit(conn)
    return added


async def enqueue_task(db: Database, kind: TaskKind | str, payload: dict[str, Any], **options: Any) -> int | None:
    """`enqueue` (same keyword options) in a transaction of its own, for callers with nothing else to write."""
    return await db.write(lambda conn: enqueue(conn, kind, payload, **options))


async def retry_dead_tasks(db: Database, *, task_id: int | None = None, kind: str | None = None) -> int:
    """Queue dead tasks again (one by id, or all, or all of a kind) with fresh attempts.

    Refuses (ActionError) an id that does not exist or is not dead.
    """

    def requeue(conn: Connection) -> int:
        now = time.time()
        if task_id is not None:
            task = q.get_task(conn, task_id)
            if task is None:
                raise ActionError(f"no task {task_id}; list dead ones with: microfedi tasks dead", 404)
            if task.state != q.DEAD:
                raise ActionError(f"task {task_id} is {task.state}, not dead; only dead tasks are retried")
        count = q.requeue_dead(conn, now, task_id=task_id, kind=kind)
        if count:
            _wake_after_commit(conn)
        return count

    return await db.write(requeue)
