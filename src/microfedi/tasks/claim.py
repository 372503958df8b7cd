"""One write transaction per runner cycle: record what finished, claim what is next.

Completions and host state are written in the same transaction as the next
claim, so a burst of short tasks (a delivery fan-out) costs one transaction
per batch, not one per task. The runner computes a `ClaimPlan` from what it
is running; `claim_and_complete` runs in the database's writer thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from microfedi.store import tasks as q
from microfedi.tasks.circuit import HostWrites
from microfedi.tasks.registry import Priority

# After this many due tasks in a row that cannot be taken (their kind or host
# filled up during this claim), ask again with those excluded in SQL: a flood
# for one host must not be walked row by row in Python on every claim.
MAX_SKIPS_BEFORE_REQUERY = 64


@dataclass(frozen=True)
class ClaimPlan:
    """What the runner can take: free slots in total, per kind and per host.

    `host_slots` lists hosts whose free slots differ from `default_host_slots`
    (hosts with runs under way, or down, or half-open); a host with 0 is skipped.
    `leases` is the lease length per kind.
    """

    slots: int
    kind_slots: Mapping[str, int]
    host_slots: Mapping[str, int]
    default_host_slots: int
    leases: Mapping[str, float]
    # Each kind's priority, so a claim only asks for kinds of the priority at hand.
    priorities: Mapping[str, int]


def claim_and_complete(
    conn: sqlite3.Connection,
    completions: Sequence[q.Completion],
    host_writes: HostWrites,
    plan: ClaimPlan | None,
    now: float,
) -> list[q.TaskRow]:
    """Apply completions and host writes, then claim per `plan` (None: claim nothing)."""
    q.apply_completions(conn, completions, now)
    q.save_hosts(conn, host_writes.rows)
    for host, deferred_to in host_writes.undefer.items():
        q.undefer_host_tasks(conn, host, deferred_to, now)
    for host, until in host_writes.defer_until.items():
        q.defer_host_tasks(conn, host, until)
    if plan is None or plan.slots <= 0:
        return []
    q.release_lapsed_leases(conn, now)
    picked = _pick(conn, plan, now)
    return q.mark_running(conn, [(task_id, now + plan.leases[kind]) for task_id, kind in picked], now)


def _pick(conn: sqlite3.Connection, plan: ClaimPlan, now: float) -> list[tuple[int, str]]:
    """(id, kind) of the tasks to claim: highest priority first, oldest due first, within limits."""
    kind_slots = {kind: free for kind, free in plan.kind_slots.items() if free > 0}
    host_slots = dict(plan.host_slots)
    picked: list[tuple[int, str]] = []
    for priority in Priority:
        while True:
            # Asking only for kinds of this priority that have room keeps a
            # full kind's backlog from being walked on every claim.
            open_kinds = [k for k, free in kind_slots.items() if free > 0 and plan.priorities.get(k) == priority]
            if not open_kinds:
                break
            full_hosts = [host for host, free in host_slots.items() if free <= 0]
            picked_ids = [task_id for task_id, _ in picked]
            skipped = 0
            for task_id, kind, host in q.due_tasks(conn, now, priority, open_kinds, full_hosts, picked_ids):
                if kind_slots[kind] <= 0 or (host is not None and host_slots.get(host, plan.default_host_slots) <= 0):
                    skipped += 1
                    if skipped > MAX_SKIPS_BEFORE_REQUERY:
                        break
                    continue
                kind_slots[kind] -= 1
                if host is not None:
                    host_slots[host] = host_slots.get(host, plan.default_host_slots) - 1
                picked.append((task_id, kind))
                if len(picked) >= plan.slots:
                    return picked
            else:
                break  # this priority has nothing more we can take
    return picked
