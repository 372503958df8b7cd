"""The loop's upkeep: purging old tasks, and not letting tasks of a dead host wait forever."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from microfedi.instance import Instance
from microfedi.store import tasks as q
from microfedi.store.database import Connection
from microfedi.tasks.maintenance import (
    DAY,
    declare_maintenance_kinds,
    expire_tasks_of_down_hosts,
    purge_finished_tasks,
)
from microfedi.tasks.queue import enqueue
from microfedi.tasks.registry import Priority, Registry, TaskContext, TaskKind

if TYPE_CHECKING:
    from conftest import MakeRunner, TaskTable


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


@pytest.fixture
def deliver(registry: Registry) -> TaskKind:
    return registry.task_kind("deliver", priority=Priority.DELIVERY)(handler)


async def add_task(instance: Instance, kind: TaskKind, **columns: Any) -> int:
    """A task with some columns set directly (its age, its state), as if time had passed."""

    def write(conn: Connection) -> int:
        task_id = enqueue(conn, kind, {}, host=columns.pop("host", None))
        assert task_id is not None
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", (*columns.values(), task_id))
        return task_id

    return await instance.db.write(write)


def context(instance: Instance, kind: str) -> TaskContext:
    return TaskContext(instance, task_id=0, kind=kind, attempt=1, host=None)


async def remaining_ids(instance: Instance) -> set[int]:
    return set(await instance.db.read(lambda c: [r[0] for r in c.execute("SELECT id FROM tasks")]))


async def old_and_new_tasks(instance: Instance, kind: TaskKind) -> dict[str, int]:
    now = time.time()
    return {
        "done 8 days ago": await add_task(instance, kind, state="done", finished_at=now - 8 * DAY),
        "done yesterday": await add_task(instance, kind, state="done", finished_at=now - DAY),
        "dead 8 days ago": await add_task(instance, kind, state="dead", finished_at=now - 8 * DAY),
        "dead 31 days ago": await add_task(instance, kind, state="dead", finished_at=now - 31 * DAY),
        "queued long ago": await add_task(instance, kind, created_at=now - 90 * DAY),
    }


async def test_done_tasks_are_purged_after_a_week_and_dead_ones_after_a_month(
    instance: Instance, deliver: TaskKind
) -> None:
    ids = await old_and_new_tasks(instance, deliver)
    await purge_finished_tasks(context(instance, "tasks.purge"), {})
    kept = await remaining_ids(instance)
    assert kept == {ids["done yesterday"], ids["dead 8 days ago"], ids["queued long ago"]}


async def test_the_retentions_are_settings(instance: Instance, deliver: TaskKind) -> None:
    ids = await old_and_new_tasks(instance, deliver)
    instance.settings.extra.update(task_done_retention_days=0.5, task_dead_retention_days=40)
    await purge_finished_tasks(context(instance, "tasks.purge"), {})
    assert await remaining_ids(instance) == {ids["dead 8 days ago"], ids["dead 31 days ago"], ids["queued long ago"]}
    instance.settings.extra["task_done_retention_days"] = "soon"
    with pytest.raises(ValueError, match="task_done_retention_days"):
        await purge_finished_tasks(context(instance, "tasks.purge"), {})


async def test_tasks_of_a_down_host_past_their_deadline_are_killed(instance: Instance, deliver: TaskKind) -> None:
    now = time.time()
    await instance.db.write(
        q.save_hosts,
        [
            q.HostRow("down.example", 9, now + 3600, "connection refused", None, now),
            q.HostRow("up.example", 0, None, None, now, None),
        ],
    )
    expired = await add_task(instance, deliver, host="down.example", deadline=now - 1)
    not_yet = await add_task(instance, deliver, host="down.example", deadline=now + 60)
    host_up = await add_task(instance, deliver, host="up.example", deadline=now - 1)
    await expire_tasks_of_down_hosts(context(instance, "tasks.expire"), {})
    states = {task_id: (await instance.db.read(q.get_task, task_id)) for task_id in (expired, not_yet, host_up)}
    assert states[expired] is not None and states[expired].state == "dead"
    assert states[expired].last_error == (
        "host down.example was still down at the retry deadline; last error: connection refused"
    )
    assert [states[i].state for i in (not_yet, host_up)] == ["queued", "queued"]  # type: ignore[union-attr]


async def test_the_runner_schedules_the_upkeep_kinds(
    instance: Instance, registry: Registry, deliver: TaskKind, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    declare_maintenance_kinds(registry)
    purged = await add_task(instance, deliver, state="done", finished_at=time.time() - 8 * DAY)

    async def gone() -> bool:
        return purged not in await remaining_ids(instance)

    await make_runner()
    await tasks_table.wait_for(gone, what="the purge")
    rows = await instance.db.read(lambda c: c.execute("SELECT dedupe_key, state FROM tasks ORDER BY dedupe_key").fetchall())
    assert [r["dedupe_key"] for r in rows] == ["periodic:tasks.expire", "periodic:tasks.purge"]
