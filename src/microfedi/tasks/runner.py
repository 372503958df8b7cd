"""The runner: claims tasks, runs their handlers, records what became of them.

One runner per server process, started and stopped by the app's lifespan:

    runner = Runner(instance)
    await runner.start()
    ...
    await runner.stop(grace=5)

A dispatcher loop does one write transaction per cycle (`claim.py`): the
completions and host states gathered since the last cycle, then a claim of as
many due tasks as the limits allow. It cycles when woken (a run finished, or
a task was enqueued in this process), when a retry or a circuit's cooldown
falls due, and otherwise every `poll_interval` seconds to see tasks enqueued
by other processes and leases that lapsed.

Crash safety: a claimed task carries a lease; if its process dies, the lease
lapses and any runner claims the task again. A runner that starts while no
other runner holds the database's runner lock (a `flock`, which the kernel
drops when its holder dies, `kill -9` included) knows that every task still
marked running was left by a dead process, and queues those again at once
instead of waiting out their leases.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import heapq
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import microfedi.tasks.maintenance  # noqa: F401  (declares the upkeep kinds on the global registry)
from microfedi.store import tasks as q
from microfedi.store.database import Connection
from microfedi.tasks.circuit import HostCircuit
from microfedi.tasks.claim import ClaimPlan, claim_and_complete
from microfedi.tasks.errors import PermanentError, RetryableError
from microfedi.tasks.queue import NewTask, add_waker, remove_waker, task_row
from microfedi.tasks.registry import Registry, TaskContext, TaskKind
from microfedi.tasks.registry import registry as global_registry
from microfedi.tasks.retry import (
    after_failure,
    after_success,
    describe_error,
    failed_host,
)

if TYPE_CHECKING:
    from microfedi.instance import Instance

log = logging.getLogger("microfedi.tasks")

# After a failed write (disk full, say), wait this long before the next cycle.
WRITE_ERROR_PAUSE = 1.0
# How long stop() waits for cancelled handlers to unwind.
CANCEL_WAIT = 1.0


@dataclass
class KindCounters:
    """Runs of one kind since the runner started (for /metrics)."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass
class _Run:
    task: q.TaskRow
    future: asyncio.Task[None]


class Runner:
    """Runs the tasks of `instance.db` with the handlers of `registry`.

    Limits: `max_concurrency` runs in total, each kind's `concurrency`, and
    `circuit.host_limit` per remote host (0 while the host is down, 1 while
    it is probed). Leases last a kind's timeout plus `lease_margin`.
    """

    def __init__(
        self,
        instance: Instance,
        *,
        registry: Registry = global_registry,
        max_concurrency: int = 32,
        circuit: HostCircuit | None = None,
        poll_interval: float = 1.0,
        lease_margin: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.instance = instance
        self.registry = registry
        self.max_concurrency = max_concurrency
        self.circuit = circuit or HostCircuit()
        self.poll_interval = poll_interval
        self.lease_margin = lease_margin
        self.counters: collections.defaultdict[str, KindCounters] = collections.defaultdict(KindCounters)
        self._rng = rng or random.Random()
        self._runs: dict[int, _Run] = {}
        self._running_kinds: collections.Counter[str] = collections.Counter()
        self._running_hosts: collections.Counter[str] = collections.Counter()
        self._completions: list[q.Completion] = []
        # Times at which a retry this runner scheduled falls due.
        self._timers: list[float] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sole_runner_lock: IO[bytes] | None = None

    @property
    def running(self) -> int:
        return len(self._runs)

    async def start(self) -> None:
        """Schedule the periodic kinds, load the circuit state, and start dispatching.

        As the only runner of its database, first queue again the tasks a dead
        process left running.
        """
        if self._dispatcher is not None:
            raise RuntimeError("the runner is started already")
        self._sole_runner_lock = _take_sole_runner_lock(self.instance.db.path)
        sole = self._sole_runner_lock is not None
        if not sole:
            log.warning("another task runner uses %s; both take tasks from it", self.instance.db.path)
        hosts, released = await self.instance.db.write(self._prepare, time.time(), sole)
        if released:
            log.info("queued again %d task(s) left running by a process that died", released)
        self.circuit.load(hosts)
        self._loop = asyncio.get_running_loop()
        add_waker(self._wake_from_any_thread)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="microfedi-task-dispatcher")

    def wake(self) -> None:
        """Run a cycle now (call from the event loop's thread; enqueue does it by itself)."""
        self._wake.set()

    def _wake_from_any_thread(self) -> None:
        """Called by the writer thread after a commit that enqueued tasks."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: nothing left to wake
            pass

    def _prepare(self, conn: Connection, now: float, sole: bool) -> tuple[list[q.HostRow], int]:
        released = q.release_all_leases(conn, now) if sole else 0
        for kind in self.registry:
            if kind.periodic:
                q.ensure_periodic_task(conn, task_row(kind, NewTask({}, dedupe_key=kind.dedupe_key), None, now))
        return q.troubled_hosts(conn), released

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let runs finish for up to `grace` seconds; release the rest.

        A released task is queued again with its attempt given back, since
        that attempt did not complete.
        """
        if self._dispatcher is None:
            return
        self._stopping = True
        remove_waker(self._wake_from_any_thread)
        self._wake.set()
        await self._dispatcher
        self._dispatcher = None
        futures = [run.future for run in self._runs.values()]
        if futures:
            _, pending = await asyncio.wait(futures, timeout=grace)
            for future in pending:
                future.cancel()
            if pending:
                await asyncio.wait(pending, timeout=CANCEL_WAIT)
        for run in list(self._runs.values()):
            if run.future.done():  # cancelled before its handler ever started
                self._finish(run.task, q.Completion.released(run.task.id, run.task.attempts))
        try:
            await self._cycle(claim=False)
        except Exception:
            log.exception("task runner: could not record the last results; their leases will lapse and they run again")
        if self._sole_runner_lock is not None:
            self._sole_runner_lock.close()
            self._sole_runner_lock = None

    # ------------------------------------------------------------ dispatching

    async def _dispatch(self) -> None:
        while not self._stopping:
            try:
                await self._cycle(claim=True)
            except Exception:
                log.exception("task runner: a dispatch cycle failed; trying again shortly")
                await asyncio.sleep(WRITE_ERROR_PAUSE)
            await self._sleep()

    async def _sleep(self) -> None:
        now = time.time()
        while self._timers and self._timers[0] <= now:
            heapq.heappop(self._timers)
        wake_at = now + self.poll_interval
        if self._timers:
            wake_at = min(wake_at, self._timers[0])
        reopening = self.circuit.next_reopening(now)
        if reopening is not None:
            wake_at = min(wake_at, reopening)
        if not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), max(wake_at - now, 0))
            except TimeoutError:
                pass
        self._wake.clear()

    async def _cycle(self, *, claim: bool) -> None:
        """One write: record completions and host states, and claim if `claim`."""
        now = time.time()
        plan = self._plan() if claim and not self._stopping else None
        if not self._completions and not self.circuit.has_writes() and (plan is None or plan.slots <= 0):
            return
        completions, self._completions = self._completions, []
        host_writes = self.circuit.take_writes()
        try:
            claimed = await self.instance.db.write(claim_and_complete, completions, host_writes, plan, now)
        except BaseException:
            # Keep them for the next cycle (a full disk may clear up).
            self._completions[:0] = completions
            self.circuit.restore_writes(host_writes)
            raise
        for task in claimed:
            self._start(task)

    def _plan(self) -> ClaimPlan:
        now = time.time()
        host_slots = {host: limit - self._running_hosts[host] for host, limit in self.circuit.limits(now).items()}
        for host, running in self._running_hosts.items():
            host_slots.setdefault(host, self.circuit.host_limit - running)
        return ClaimPlan(
            slots=self.max_concurrency - len(self._runs),
            kind_slots={kind.name: kind.concurrency - self._running_kinds[kind.name] for kind in self.registry},
            host_slots=host_slots,
            default_host_slots=self.circuit.host_limit,
            leases={kind.name: kind.timeout + self.lease_margin for kind in self.registry},
            priorities={kind.name: int(kind.priority) for kind in self.registry},
        )

    # ------------------------------------------------------------ running

    def _start(self, task: q.TaskRow) -> None:
        kind = self.registry.get(task.kind)
        future = asyncio.create_task(self._run(kind, task), name=f"task-{task.kind}-{task.id}")
        self._runs[task.id] = _Run(task, future)
        self._running_kinds[kind.name] += 1
        if task.host:
            self._running_hosts[task.host] += 1

    async def _run(self, kind: TaskKind, task: q.TaskRow) -> None:
        context = TaskContext(self.instance, task.id, task.kind, task.attempts, task.host)
        try:
            await asyncio.wait_for(kind.handler(context, json.loads(task.payload)), kind.timeout)
        except asyncio.CancelledError:
            self._finish(task, q.Completion.released(task.id, task.attempts))
            raise
        except Exception as error:  # noqa: BLE001  (any failure is the task's: retried, and logged if a bug)
            self._finish(task, self._failed(kind, task, error))
        else:
            self._finish(task, self._succeeded(kind, task))

    def _succeeded(self, kind: TaskKind, task: q.TaskRow) -> q.Completion:
        counters = self.counters[kind.name]
        counters.processed += 1
        counters.succeeded += 1
        now = time.time()
        if task.host:
            self.circuit.record_success(task.host, now)
        return after_success(kind, task, now)

    def _failed(self, kind: TaskKind, task: q.TaskRow, error: Exception) -> q.Completion:
        counters = self.counters[kind.name]
        counters.processed += 1
        counters.failed += 1
        now = time.time()
        if not isinstance(error, (PermanentError, RetryableError, TimeoutError)):
            log.error("task %s %d (attempt %d) failed with a bug", kind.name, task.id, task.attempts, exc_info=error)
        host = failed_host(task, error)
        if host and self.circuit.record_failure(host, describe_error(error), now):
            log.warning("host %s is down after repeated failures (%s); its tasks wait", host, describe_error(error))
        completion = after_failure(kind, task, error, now, self._rng)
        if completion.state == q.DEAD:
            log.info("task %s %d is dead after %d attempt(s): %s", kind.name, task.id, task.attempts, completion.error)
        return completion

    def _finish(self, task: q.TaskRow, completion: q.Completion) -> None:
        del self._runs[task.id]
        self._running_kinds[task.kind] -= 1
        if task.host:
            self._running_hosts[task.host] -= 1
            if not self._running_hosts[task.host]:
                del self._running_hosts[task.host]
        self._completions.append(completion)
        if completion.state == q.QUEUED and completion.run_at is not None:
            heapq.heappush(self._timers, completion.run_at)
        self._wake.set()


def _take_sole_runner_lock(database: Path) -> IO[bytes] | None:
    """Lock the database's runner lock file, or None when another live runner holds it."""
    handle = open(database.with_name(database.name + ".runner-lock"), "ab")  # noqa: SIM115  (held while running)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
