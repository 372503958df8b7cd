"""The claim transaction on its own: what it picks within the limits, and what it writes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from microfedi.store import tasks as q
from microfedi.store.database import Database
from microfedi.tasks.circuit import HostWrites
from microfedi.tasks.claim import (
    MAX_SKIPS_BEFORE_REQUERY,
    ClaimPlan,
    claim_and_complete,
)
from microfedi.tasks.queue import NewTask, enqueue_many
from microfedi.tasks.registry import Priority, Registry, TaskContext, TaskKind


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


@pytest.fixture
def deliver(registry: Registry) -> TaskKind:
    return registry.task_kind("deliver", priority=Priority.DELIVERY, per_host=True, timeout=30)(handler)


def plan(slots: int = 10, kinds: dict[str, int] | None = None, hosts: dict[str, int] | None = None) -> ClaimPlan:
    kinds = kinds or {"deliver": 32}
    priorities = {"deliver": Priority.DELIVERY, "fetch": Priority.FETCH, "other": Priority.LOCAL}
    return ClaimPlan(
        slots=slots, kind_slots=kinds, host_slots=hosts or {}, default_host_slots=4,
        leases=dict.fromkeys(kinds, 40.0), priorities={k: int(priorities[k]) for k in kinds},
    )


async def claim(db: Database, claim_plan: ClaimPlan | None, completions: list[q.Completion] = ()) -> list[q.TaskRow]:  # type: ignore[assignment]
    return await db.write(claim_and_complete, list(completions), HostWrites(), claim_plan, time.time())


async def test_a_flood_for_one_host_does_not_hide_the_other_hosts(db: Database, deliver: TaskKind) -> None:
    flood = [NewTask({"n": n}, host="flood.example") for n in range(MAX_SKIPS_BEFORE_REQUERY * 5)]
    await db.write(lambda conn: enqueue_many(conn, deliver, flood))
    others = [NewTask({}, host=f"h{n}.example") for n in range(5)]
    await db.write(lambda conn: enqueue_many(conn, deliver, others))
    claimed = await claim(db, plan(slots=10))
    hosts = [task.host for task in claimed]
    assert hosts.count("flood.example") == 4
    assert sorted(h for h in hosts if h != "flood.example") == [f"h{n}.example" for n in range(5)]
    assert all(task.state == "running" and task.attempts == 1 for task in claimed)
    assert all(task.locked_until == pytest.approx(time.time() + 40, abs=1) for task in claimed)


async def test_hosts_and_kinds_without_free_slots_are_skipped(db: Database, deliver: TaskKind, registry: Registry) -> None:
    fetch = registry.task_kind("fetch", priority=Priority.FETCH)(handler)
    await db.write(lambda conn: enqueue_many(conn, deliver, [NewTask({}, host=h) for h in ("down.example", "probe.example") * 3]))
    await db.write(lambda conn: enqueue_many(conn, fetch, [NewTask({}) for _ in range(3)]))
    claimed = await claim(db, plan(kinds={"deliver": 32, "fetch": 0}, hosts={"down.example": 0, "probe.example": 1}))
    assert [(t.kind, t.host) for t in claimed] == [("deliver", "probe.example")]


async def test_higher_priorities_are_claimed_first(db: Database, deliver: TaskKind, registry: Registry) -> None:
    fetch = registry.task_kind("fetch", priority=Priority.FETCH)(handler)
    await db.write(lambda conn: enqueue_many(conn, fetch, [NewTask({}) for _ in range(5)]))
    await db.write(lambda conn: enqueue_many(conn, deliver, [NewTask({}, host=f"h{n}.example") for n in range(2)]))
    claimed = await claim(db, plan(slots=3, kinds={"deliver": 32, "fetch": 32}))
    assert [t.kind for t in claimed] == ["deliver", "deliver", "fetch"]


async def test_tasks_not_yet_due_and_unknown_kinds_are_left(db: Database, deliver: TaskKind) -> None:
    later = [NewTask({}, host="a.example", run_at=time.time() + 60)]
    await db.write(lambda conn: enqueue_many(conn, deliver, later))
    assert await claim(db, plan()) == []
    assert await claim(db, plan(kinds={"other": 4})) == []


async def test_completions_are_recorded_in_the_same_transaction(db: Database, deliver: TaskKind) -> None:
    await db.write(lambda conn: enqueue_many(conn, deliver, [NewTask({}, host=f"h{n}.example") for n in range(3)]))
    first, second, third = await claim(db, plan(slots=3))
    retry_at = time.time() + 30
    await claim(
        db,
        None,
        [
            q.Completion.done(first.id, first.attempts),
            q.Completion.retry(second.id, second.attempts, retry_at, "HTTP 503"),
            q.Completion.released(third.id, third.attempts),
        ],
    )
    done, retried, released = [await db.read(q.get_task, t.id) for t in (first, second, third)]
    assert done is not None and (done.state, done.finished_at is not None, done.locked_until) == ("done", True, None)
    assert retried is not None and (retried.state, retried.run_at, retried.last_error, retried.attempts) == (
        "queued", retry_at, "HTTP 503", 1,
    )  # fmt: skip
    assert released is not None and (released.state, released.attempts, released.locked_until) == ("queued", 0, None)


async def test_lapsed_leases_are_claimable_again(db: Database, deliver: TaskKind) -> None:
    await db.write(lambda conn: enqueue_many(conn, deliver, [NewTask({}, host="a.example")]))
    [first] = await claim(db, plan())
    assert await claim(db, plan()) == []  # leased
    await db.write(lambda conn: conn.execute("UPDATE tasks SET locked_until = ?", (time.time() - 1,)))
    [again] = await claim(db, plan())
    assert again.id == first.id and again.attempts == 2
