"""Fixtures for the task loop: an open Instance, a test-local registry, runners."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from microfedi.config import Settings
from microfedi.instance import Instance
from microfedi.store import tasks as q
from microfedi.store.database import Connection, Database
from microfedi.tasks.circuit import HostCircuit
from microfedi.tasks.registry import Registry
from microfedi.tasks.runner import Runner


@pytest.fixture
async def instance(tmp_path: Path) -> AsyncIterator[Instance]:
    opened = Instance(Settings(data_dir=tmp_path / "data"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def registry() -> Registry:
    """A registry of this test's own kinds (the global one is not touched)."""
    return Registry()


MakeRunner = Callable[..., Awaitable[Runner]]


@pytest.fixture
async def make_runner(instance: Instance, registry: Registry) -> AsyncIterator[MakeRunner]:
    """`runner = await make_runner(max_concurrency=4, circuit=...)`: started now, stopped after the test."""
    started: list[Runner] = []

    async def start(**options: Any) -> Runner:
        options.setdefault("poll_interval", 0.05)
        options.setdefault("circuit", HostCircuit(base_cooldown=0.3, max_cooldown=5.0))
        runner = Runner(instance, registry=options.pop("registry", registry), **options)
        await runner.start()
        started.append(runner)
        return runner

    yield start
    for runner in started:
        await runner.stop(grace=1)


class TaskTable:
    """Reading the tasks table of the test's database, and waiting for it to change."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def task(self, task_id: int) -> q.TaskRow:
        row = await self.db.read(q.get_task, task_id)
        assert row is not None, f"no task {task_id}"
        return row

    async def states(self) -> dict[str, int]:
        def read(conn: Connection) -> dict[str, int]:
            return dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())

        return await self.db.read(read)

    async def wait_for(self, check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "it") -> float:
        """Wait until `await check()` is true; returns the seconds it took."""
        start = time.monotonic()
        while not await check():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; states: {await self.states()}")
            await asyncio.sleep(0.005)
        return time.monotonic() - start

    async def wait_for_states(self, timeout: float = 5.0, **expected: int) -> float:
        """Wait until the count of tasks per state is exactly `expected` (e.g. done=3)."""

        async def reached() -> bool:
            return await self.states() == expected

        return await self.wait_for(reached, timeout, what=f"states {expected}")


@pytest.fixture
def tasks_table(instance: Instance) -> TaskTable:
    return TaskTable(instance.db)


class Concurrency:
    """Counts how many handler runs overlap, per key (kind, host, "all")."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    @contextlib.contextmanager
    def running(self, *keys: str) -> Iterator[None]:
        for key in keys:
            self.now[key] = self.now.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.now[key])
        try:
            yield
        finally:
            for key in keys:
                self.now[key] -= 1


@pytest.fixture
def concurrency() -> Concurrency:
    return Concurrency()
