"""Task kinds, declared as data and checked when they are defined.

    @task_kind("deliver", priority=Priority.DELIVERY, max_attempts=20,
               retry_window=2 * 86400, timeout=30, concurrency=16, per_host=True)
    async def deliver(ctx: TaskContext, payload: dict) -> None: ...

A mistake in a declaration (a duplicate name, a limit that cannot work, a
handler that is not `async def`, a periodic kind without an interval) raises
`TaskKindError` at import time, not in production. The decorator returns the
`TaskKind`, which `enqueue` accepts as well as its name.

This module imports nothing from federation or the web layer, so any module
can declare kinds without import cycles. Tests declare theirs on their own
`Registry()` and hand it to the `Runner`.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from microfedi.instance import Instance


class Priority(enum.IntEnum):
    """Highest first, so local users are never starved by a flood from outside."""

    LOCAL = 0
    DELIVERY = 1
    INBOUND = 2
    FETCH = 3
    MAINTENANCE = 4


class TaskKindError(Exception):
    """A task kind is declared wrongly, or used without being declared."""


@dataclass(frozen=True)
class TaskContext:
    """What a handler knows about the run it is in."""

    instance: Instance
    task_id: int
    kind: str
    attempt: int
    host: str | None


Handler = Callable[[TaskContext, dict[str, Any]], Awaitable[None]]

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


@dataclass(frozen=True)
class TaskKind:
    """One kind of task: its handler and the rules the runner applies to it.

    - `max_attempts`, `retry_window` (seconds from creation): whichever runs
      out first makes a failing task dead.
    - `timeout`: seconds a run may take; the lease is this plus a margin.
    - `concurrency`: runs of this kind at once.
    - `per_host`: every task of the kind names its remote host (enqueue
      refuses one without); per-host limits and the circuit breaker apply to
      any task that has a host.
    - `backoff_base`, `backoff_cap`: the retry delay grows from base to cap.
    - `every`: a periodic reconciler, run again this many seconds after each run.
    """

    name: str
    handler: Handler
    priority: Priority
    max_attempts: int = 10
    retry_window: float = 86400.0
    timeout: float = 60.0
    concurrency: int = 4
    per_host: bool = False
    backoff_base: float = 30.0
    backoff_cap: float = 6 * 3600.0
    every: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append("the name must be lower-case letters, digits, '_', '.' or '-', starting with a letter")
        if not inspect.iscoroutinefunction(self.handler):
            problems.append("the handler must be an `async def` function")
        if not isinstance(self.priority, Priority):
            problems.append(f"priority must be a Priority, not {self.priority!r}")
        if self.max_attempts < 1:
            problems.append("max_attempts must be at least 1")
        for field in ("retry_window", "timeout", "backoff_base"):
            if not getattr(self, field) > 0:
                problems.append(f"{field} must be more than 0 seconds")
        if self.concurrency < 1:
            problems.append("concurrency must be at least 1")
        if self.backoff_cap < self.backoff_base:
            problems.append("backoff_cap must be at least backoff_base")
        if self.every is not None:
            if not self.every > 0:
                problems.append("every must be more than 0 seconds")
            if self.per_host:
                problems.append("a periodic kind cannot be per_host (it has no remote host)")
        if problems:
            raise TaskKindError(f"task kind {self.name!r}: " + "; ".join(problems))

    @property
    def periodic(self) -> bool:
        return self.every is not None

    @property
    def dedupe_key(self) -> str | None:
        """The key under which the one queued run of a periodic kind lives."""
        return f"periodic:{self.name}" if self.periodic else None


class Registry:
    """The task kinds a runner knows, by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, TaskKind] = {}

    def add(self, kind: TaskKind) -> TaskKind:
        if kind.name in self._kinds:
            raise TaskKindError(f"task kind {kind.name!r} is defined twice")
        self._kinds[kind.name] = kind
        return kind

    def task_kind(
        self, name: str, *, priority: Priority | None = None, every: float | None = None, **rules: Any
    ) -> Callable[[Handler], TaskKind]:
        """Decorator declaring `async def handler(ctx, payload)` as task kind `name`.

        `priority` is required, except for periodic kinds (`every=SECONDS`),
        which default to maintenance. Other keywords are TaskKind's rules.
        """
        if priority is None:
            if every is None:
                raise TaskKindError(f"task kind {name!r}: give a priority (Priority.LOCAL … Priority.MAINTENANCE)")
            priority = Priority.MAINTENANCE

        def declare(handler: Handler) -> TaskKind:
            return self.add(TaskKind(name, handler, priority, every=every, **rules))

        return declare

    def get(self, name: str) -> TaskKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise TaskKindError(
                f"unknown task kind {name!r}; is the module that declares it imported? "
                f"known: {', '.join(sorted(self._kinds)) or 'none'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[TaskKind]:
        return iter(self._kinds.values())

    def names(self) -> list[str]:
        return sorted(self._kinds)


registry = Registry()
"""The process-wide registry; the server's runner uses it."""

task_kind = registry.task_kind
