"""Task kinds are checked when they are declared, not when they first run."""

from __future__ import annotations

from typing import Any

import pytest

from microfedi.tasks import maintenance
from microfedi.tasks.registry import (
    Priority,
    Registry,
    TaskContext,
    TaskKindError,
    registry,
)


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


def test_a_declared_kind_keeps_its_rules_and_is_found_by_name(registry: Registry) -> None:
    kind = registry.task_kind("deliver", priority=Priority.DELIVERY, max_attempts=20, concurrency=16, per_host=True)(
        handler
    )
    assert registry.get("deliver") is kind
    assert (kind.priority, kind.max_attempts, kind.concurrency, kind.per_host) == (Priority.DELIVERY, 20, 16, True)
    assert kind.handler is handler and not kind.periodic and kind.dedupe_key is None
    assert "deliver" in registry and registry.names() == ["deliver"]


def test_priorities_run_local_first_and_maintenance_last() -> None:
    assert list(Priority) == sorted(Priority)
    assert [p.name for p in Priority] == ["LOCAL", "DELIVERY", "INBOUND", "FETCH", "MAINTENANCE"]


def test_a_duplicate_name_is_refused(registry: Registry) -> None:
    registry.task_kind("fetch", priority=Priority.FETCH)(handler)
    with pytest.raises(TaskKindError, match="defined twice"):
        registry.task_kind("fetch", priority=Priority.FETCH)(handler)


def test_a_handler_that_is_not_async_is_refused(registry: Registry) -> None:
    def blocking(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    with pytest.raises(TaskKindError, match="async def"):
        registry.task_kind("sync", priority=Priority.LOCAL)(blocking)  # type: ignore[arg-type]
    assert "sync" not in registry


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"retry_window": -1}, "retry_window"),
        ({"concurrency": 0}, "concurrency"),
        ({"backoff_base": 10, "backoff_cap": 5}, "backoff_cap"),
    ],
)
def test_limits_that_cannot_work_are_refused(registry: Registry, rules: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskKindError, match=message):
        registry.task_kind("bad", priority=Priority.LOCAL, **rules)(handler)


def test_a_bad_name_is_refused(registry: Registry) -> None:
    with pytest.raises(TaskKindError, match="name"):
        registry.task_kind("Deliver Now", priority=Priority.LOCAL)(handler)


def test_a_kind_needs_a_priority_unless_it_is_periodic(registry: Registry) -> None:
    with pytest.raises(TaskKindError, match="priority"):
        registry.task_kind("no-priority")(handler)
    periodic = registry.task_kind("refresh", every=60)(handler)
    assert periodic.periodic and periodic.priority is Priority.MAINTENANCE
    assert periodic.dedupe_key == "periodic:refresh"


@pytest.mark.parametrize(("rules", "message"), [({"every": 0}, "every"), ({"every": 60, "per_host": True}, "per_host")])
def test_a_periodic_kind_needs_an_interval_and_no_host(registry: Registry, rules: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskKindError, match=message):
        registry.task_kind("periodic-bad", **rules)(handler)


def test_an_unknown_kind_says_what_is_known(registry: Registry) -> None:
    registry.task_kind("known", priority=Priority.LOCAL)(handler)
    with pytest.raises(TaskKindError, match="unknown task kind 'nope'.*known: known"):
        registry.get("nope")


def test_the_global_registry_holds_the_upkeep_kinds() -> None:
    assert {"tasks.purge", "tasks.expire"} <= set(registry.names())
    assert registry.get("tasks.purge").handler is maintenance.purge_finished_tasks
