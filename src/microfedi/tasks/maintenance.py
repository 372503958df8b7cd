"""The task loop's own upkeep, as periodic reconcilers.

- `tasks.purge`: delete done tasks after a retention (default 7 days, setting
  `task_done_retention_days`) and dead ones after a longer one (default 30,
  `task_dead_retention_days`), so the table stays small and dedupe keys free up.
- `tasks.expire`: kill queued tasks whose retry deadline passed while their
  host was down; they are not claimed while it is down, so without this they
  would wait forever for a host that may never come back.

Lapsed leases need no reconciler: every claim releases them first.
"""

from __future__ import annotations

import time
from typing import Any

from microfedi.config import Settings
from microfedi.store import tasks as q
from microfedi.tasks.registry import Registry, TaskContext, registry

DAY = 86400.0
DEFAULT_DONE_RETENTION_DAYS = 7
DEFAULT_DEAD_RETENTION_DAYS = 30
PURGE_SLICE = 5000


def retention_days(settings: Settings, name: str, default: float) -> float:
    """A retention setting from microfedi.toml (the `extra` table), in days."""
    value = settings.extra.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} in microfedi.toml must be a positive number of days, not {value!r}")
    return float(value)


async def purge_finished_tasks(ctx: TaskContext, payload: dict[str, Any]) -> None:
    settings = ctx.instance.settings
    now = time.time()
    done_days = retention_days(settings, "task_done_retention_days", DEFAULT_DONE_RETENTION_DAYS)
    dead_days = retention_days(settings, "task_dead_retention_days", DEFAULT_DEAD_RETENTION_DAYS)
    # In slices, so a big purge does not hold the one writer for long.
    done_before, dead_before = now - done_days * DAY, now - dead_days * DAY
    while await ctx.instance.db.write(q.purge_finished, done_before, dead_before, PURGE_SLICE) == PURGE_SLICE:
        pass


async def expire_tasks_of_down_hosts(ctx: TaskContext, payload: dict[str, Any]) -> None:
    await ctx.instance.db.write(q.expire_tasks_of_down_hosts, time.time())


def declare_maintenance_kinds(target: Registry) -> None:
    """Declare the upkeep kinds on `target` (done for the global registry on import)."""
    target.task_kind("tasks.purge", every=3600, timeout=300)(purge_finished_tasks)
    target.task_kind("tasks.expire", every=300, timeout=60)(expire_tasks_of_down_hosts)


declare_maintenance_kinds(registry)
