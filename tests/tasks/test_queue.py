"""Enqueueing: inside the caller's transaction, deduplicated, waking the runner after commit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from microfedi.store import tasks as q
from microfedi.store.database import Connection, Database, connect
from microfedi.tasks.queue import (
    NewTask,
    add_waker,
    enqueue,
    enqueue_many,
    enqueue_task,
    remove_waker,
)
from microfedi.tasks.registry import (
    Priority,
    Registry,
    TaskContext,
    TaskKind,
    TaskKindError,
)


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


@pytest.fixture
def fetch(registry: Registry) -> TaskKind:
    return registry.task_kind("fetch", priority=Priority.FETCH, max_attempts=3, retry_window=600)(handler)


@pytest.fixture
def deliver(registry: Registry) -> TaskKind:
    return registry.task_kind("deliver", priority=Priority.DELIVERY, per_host=True)(handler)


@pytest.fixture
def wakes(db: Database) -> Iterator[list[int]]:
    """Each wake records how many tasks another connection could see at that moment."""
    observer = connect(db.path, readonly=True)
    seen: list[int] = []

    def waker() -> None:
        seen.append(observer.execute("SELECT count(*) FROM tasks").fetchone()[0])

    add_waker(waker)
    yield seen
    remove_waker(waker)
    observer.close()


async def test_a_task_gets_its_kinds_defaults(db: Database, fetch: TaskKind) -> None:
    before = time.time()
    task_id = await enqueue_task(db, fetch, {"url": "https://remote.example/note/1", "ünï": "cödé"})
    assert task_id is not None
    task = await db.read(q.get_task, task_id)
    assert task is not None
    assert (task.kind, task.state, task.priority, task.attempts, task.max_attempts) == ("fetch", "queued", 3, 0, 3)
    assert json.loads(task.payload) == {"url": "https://remote.example/note/1", "ünï": "cödé"}
    assert before <= task.run_at <= task.created_at + 0.001
    assert task.deadline == pytest.approx(task.created_at + 600)


async def test_the_same_dedupe_key_twice_is_a_no_op(db: Database, fetch: TaskKind) -> None:
    first = await enqueue_task(db, fetch, {"n": 1}, dedupe_key="fetch:x")
    second = await enqueue_task(db, fetch, {"n": 2}, dedupe_key="fetch:x")
    assert first is not None and second is None
    task = await db.read(q.get_task, first)
    assert task is not None and json.loads(task.payload) == {"n": 1}
    # Tasks without a key are never deduplicated.
    assert await enqueue_task(db, fetch, {"n": 3}) != await enqueue_task(db, fetch, {"n": 3})


async def test_priority_host_and_run_at_can_be_given(db: Database, fetch: TaskKind) -> None:
    later = time.time() + 3600
    task_id = await enqueue_task(db, fetch, {}, priority=Priority.LOCAL, host="Remote.Example", run_at=later)
    task = await db.read(q.get_task, task_id)  # type: ignore[arg-type]
    assert task is not None
    assert (task.priority, task.host, task.run_at) == (0, "remote.example", later)
    assert task.deadline == pytest.approx(later + 600)  # the window starts at the first run


async def test_a_fan_out_is_one_call_and_is_deduplicated_too(db: Database, deliver: TaskKind) -> None:
    items = [NewTask({"inbox": f"https://h{i}.example/inbox"}, host=f"h{i}.example", dedupe_key=f"d:{i}") for i in range(100)]
    assert await db.write(lambda conn: enqueue_many(conn, deliver, items)) == 100
    mapping_items = [{"payload": {"inbox": "x"}, "host": "h1.example", "dedupe_key": "d:1"}, {"payload": {}, "host": "n.example"}]
    assert await db.write(lambda conn: enqueue_many(conn, deliver, mapping_items)) == 1


async def test_effects_and_tasks_commit_together(db: Database, fetch: TaskKind) -> None:
    def fails_after_enqueueing(conn: Connection) -> None:
        enqueue(conn, fetch, {})
        raise RuntimeError("the effect failed")

    with pytest.raises(RuntimeError):
        await db.write(fails_after_enqueueing)
    assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM tasks").fetchone()[0]) == 0


async def test_the_runner_is_woken_once_per_commit_when_the_rows_are_visible(
    db: Database, fetch: TaskKind, wakes: list[int]
) -> None:
    def three(conn: Connection) -> None:
        for n in range(3):
            enqueue(conn, fetch, {"n": n})

    await db.write(three)
    assert wakes == [3]

    def rolled_back(conn: Connection) -> None:
        enqueue(conn, fetch, {})
        raise RuntimeError

    with pytest.raises(RuntimeError):
        await db.write(rolled_back)
    await enqueue_task(db, fetch, {}, dedupe_key="k")
    await enqueue_task(db, fetch, {}, dedupe_key="k")  # deduplicated: nothing new to run
    assert wakes == [3, 4]


async def test_misuse_is_refused(db: Database, deliver: TaskKind, registry: Registry) -> None:
    with pytest.raises(TaskKindError, match="per_host"):
        await enqueue_task(db, deliver, {})
    periodic = registry.task_kind("sweep", every=60)(handler)
    with pytest.raises(TaskKindError, match="periodic"):
        await enqueue_task(db, periodic, {})
    with pytest.raises(TaskKindError, match="unknown task kind"):
        await enqueue_task(db, "no-such-kind", {})
    with pytest.raises(ValueError):
        await enqueue_task(db, deliver, {}, host="h.example", priority=17)  # type: ignore[arg-type]
