"""The runner against a real database: order, limits, wake-ups, failures, crashes, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any

import pytest

from microfedi.instance import Instance
from microfedi.store import tasks as q
from microfedi.store.database import Connection
from microfedi.tasks.circuit import HostCircuit
from microfedi.tasks.errors import HostError, PermanentError, RetryableError
from microfedi.tasks.queue import NewTask, enqueue_many, enqueue_task
from microfedi.tasks.registry import Priority, Registry, TaskContext, TaskKind

if TYPE_CHECKING:
    from conftest import Concurrency, MakeRunner, TaskTable

Payload = dict[str, Any]


async def do_nothing(ctx: TaskContext, payload: Payload) -> None:
    return None


async def enqueue_many_now(instance: Instance, kind: Any, items: list[NewTask]) -> int:
    return await instance.db.write(lambda conn: enqueue_many(conn, kind, items))


async def test_a_task_runs_once_with_its_context_and_is_done(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    seen: list[tuple[TaskContext, Payload]] = []

    @registry.task_kind("greet", priority=Priority.LOCAL)
    async def greet(ctx: TaskContext, payload: Payload) -> None:
        seen.append((ctx, payload))

    runner = await make_runner()
    task_id = await enqueue_task(instance.db, greet, {"to": "bob"}, host="remote.example")
    await tasks_table.wait_for_states(done=1)
    [(ctx, payload)] = seen
    assert payload == {"to": "bob"}
    assert (ctx.instance, ctx.task_id, ctx.kind, ctx.attempt, ctx.host) == (instance, task_id, "greet", 1, "remote.example")
    task = await tasks_table.task(task_id)  # type: ignore[arg-type]
    assert task.finished_at is not None and task.locked_until is None and task.attempts == 1
    assert (runner.counters["greet"].processed, runner.counters["greet"].succeeded) == (1, 1)


async def test_a_flood_of_low_priority_tasks_does_not_starve_a_local_one(
    instance: Instance, registry: Registry, make_runner: MakeRunner
) -> None:
    order: list[str] = []

    @registry.task_kind("fetch", priority=Priority.FETCH, concurrency=8)
    async def fetch(ctx: TaskContext, payload: Payload) -> None:
        order.append("fetch")
        await asyncio.sleep(0.01)

    @registry.task_kind("local", priority=Priority.LOCAL)
    async def local(ctx: TaskContext, payload: Payload) -> None:
        order.append("local")

    await enqueue_many_now(instance, fetch, [NewTask({"n": n}) for n in range(300)])
    await make_runner(max_concurrency=2)
    await asyncio.sleep(0.05)  # the flood is flowing
    await enqueue_task(instance.db, local, {})
    while "local" not in order:
        await asyncio.sleep(0.005)
    # Picked at the next free slot, ahead of the ~290 fetches still queued.
    assert order.index("local") < 40, order.index("local")

    # Queued at the same time, the higher priority goes first whatever its age.
    @registry.task_kind("deliver", priority=Priority.DELIVERY, concurrency=8)
    async def deliver(ctx: TaskContext, payload: Payload) -> None:
        order.append("deliver")

    await enqueue_task(instance.db, deliver, {}, host="a.example")
    while "deliver" not in order:
        await asyncio.sleep(0.005)
    assert order.index("deliver") - order.index("local") < 40


async def test_concurrency_is_limited_per_kind(
    instance: Instance, registry: Registry, make_runner: MakeRunner, concurrency: Concurrency, tasks_table: TaskTable
) -> None:
    @registry.task_kind("narrow", priority=Priority.FETCH, concurrency=3)
    async def narrow(ctx: TaskContext, payload: Payload) -> None:
        with concurrency.running("narrow"):
            await asyncio.sleep(0.02)

    await enqueue_many_now(instance, narrow, [NewTask({}) for _ in range(20)])
    await make_runner(max_concurrency=32)
    await tasks_table.wait_for_states(done=20)
    assert concurrency.peak["narrow"] == 3


async def test_concurrency_is_limited_per_host(
    instance: Instance, registry: Registry, make_runner: MakeRunner, concurrency: Concurrency, tasks_table: TaskTable
) -> None:
    @registry.task_kind("deliver", priority=Priority.DELIVERY, concurrency=16, per_host=True)
    async def deliver(ctx: TaskContext, payload: Payload) -> None:
        assert ctx.host is not None
        with concurrency.running(ctx.host, "all"):
            await asyncio.sleep(0.02)

    hosts = ["a.example", "b.example", "c.example"]
    await enqueue_many_now(instance, deliver, [NewTask({}, host=host) for host in hosts for _ in range(10)])
    await make_runner(circuit=HostCircuit(host_limit=2))
    await tasks_table.wait_for_states(done=30)
    assert [concurrency.peak[host] for host in hosts] == [2, 2, 2]
    assert concurrency.peak["all"] == 6


async def test_concurrency_is_limited_in_total(
    instance: Instance, registry: Registry, make_runner: MakeRunner, concurrency: Concurrency, tasks_table: TaskTable
) -> None:
    for name in ("one", "two"):

        async def handler(ctx: TaskContext, payload: Payload) -> None:
            with concurrency.running("all"):
                await asyncio.sleep(0.02)

        kind = registry.task_kind(name, priority=Priority.INBOUND, concurrency=10)(handler)
        await enqueue_many_now(instance, kind, [NewTask({}) for _ in range(15)])
    await make_runner(max_concurrency=5)
    await tasks_table.wait_for_states(done=30)
    assert concurrency.peak["all"] == 5


async def test_enqueueing_wakes_the_runner_at_once(instance: Instance, registry: Registry, make_runner: MakeRunner) -> None:
    started: asyncio.Queue[float] = asyncio.Queue()

    @registry.task_kind("ping", priority=Priority.LOCAL)
    async def ping(ctx: TaskContext, payload: Payload) -> None:
        started.put_nowait(time.monotonic())

    # Polling every 10 s cannot explain a pickup within 100 ms.
    await make_runner(poll_interval=10)
    await asyncio.sleep(0.05)
    latencies = []
    for _ in range(5):
        before = time.monotonic()
        await enqueue_task(instance.db, ping, {})
        latencies.append(await asyncio.wait_for(started.get(), 2) - before)
    assert max(latencies) < 0.1, latencies


async def test_a_task_enqueued_by_another_process_is_picked_up_by_polling(
    instance: Instance, registry: Registry, make_runner: MakeRunner
) -> None:
    started = asyncio.Event()

    @registry.task_kind("from-cli", priority=Priority.LOCAL)
    async def from_cli(ctx: TaskContext, payload: Payload) -> None:
        assert payload == {"from": "another process"}
        started.set()

    await make_runner(poll_interval=1.0)
    script = textwrap.dedent(
        """
        import asyncio, sys
        from microfedi.store.database import Database
        from microfedi.tasks.queue import enqueue_task
        from microfedi.tasks.registry import Priority, Registry

        async def handler(ctx, payload):
            pass

        kind = Registry().task_kind("from-cli", priority=Priority.LOCAL)(handler)
        with Database(sys.argv[1]) as db:
            asyncio.run(enqueue_task(db, kind, {"from": "another process"}))
        """
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(instance.db.path))
    assert await process.wait() == 0
    enqueued = time.monotonic()
    await asyncio.wait_for(started.wait(), 5)
    assert time.monotonic() - enqueued < 2.0


async def test_retries_back_off_more_each_time_then_the_task_is_dead(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    calls: list[float] = []

    @registry.task_kind("flaky", priority=Priority.FETCH, max_attempts=4, backoff_base=0.05, backoff_cap=1)
    async def flaky(ctx: TaskContext, payload: Payload) -> None:
        calls.append(time.monotonic())
        raise RetryableError(f"HTTP 503 on attempt {ctx.attempt}")

    task_id = await enqueue_task(instance.db, flaky, {})
    runner = await make_runner(poll_interval=5)  # retries wake the runner themselves
    await tasks_table.wait_for_states(dead=1)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert len(calls) == 4
    # Retry n waits in [0.05 * 2**(n-1), 0.05 * 2**n): 0.05-0.1, 0.1-0.2, 0.2-0.4 s.
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2, gaps
    assert gaps[0] < gaps[1] < gaps[2]
    task = await tasks_table.task(task_id)  # type: ignore[arg-type]
    assert (task.attempts, task.last_error) == (4, "HTTP 503 on attempt 4")
    assert (runner.counters["flaky"].processed, runner.counters["flaky"].failed) == (4, 4)


async def test_a_permanent_error_is_dead_after_one_attempt(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    calls = []

    @registry.task_kind("gone", priority=Priority.DELIVERY, max_attempts=20)
    async def gone(ctx: TaskContext, payload: Payload) -> None:
        calls.append(ctx.attempt)
        raise PermanentError("HTTP 410 Gone")

    task_id = await enqueue_task(instance.db, gone, {})
    await make_runner()
    await tasks_table.wait_for_states(dead=1)
    await asyncio.sleep(0.1)
    assert calls == [1]
    task = await tasks_table.task(task_id)  # type: ignore[arg-type]
    assert (task.attempts, task.last_error, task.state) == (1, "HTTP 410 Gone", "dead")


async def test_a_task_past_its_retry_window_is_dead_with_its_error_kept(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    calls = []

    @registry.task_kind("brief", priority=Priority.FETCH, max_attempts=1000, retry_window=0.4, backoff_base=0.02, backoff_cap=0.05)
    async def brief(ctx: TaskContext, payload: Payload) -> None:
        calls.append(ctx.attempt)
        raise HostError(None, "connection refused")

    task_id = await enqueue_task(instance.db, brief, {}, host="gone.example")
    await make_runner(circuit=HostCircuit(failure_threshold=10_000))
    await tasks_table.wait_for_states(dead=1)
    task = await tasks_table.task(task_id)  # type: ignore[arg-type]
    assert 3 <= len(calls) < 1000
    assert task.last_error == "connection refused"
    assert task.finished_at is not None and task.finished_at >= task.deadline


async def test_a_bug_in_a_handler_is_retried_and_logged_with_its_traceback(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable, caplog: pytest.LogCaptureFixture
) -> None:
    @registry.task_kind("buggy", priority=Priority.INBOUND, max_attempts=2, backoff_base=0.01, backoff_cap=0.01)
    async def buggy(ctx: TaskContext, payload: Payload) -> None:
        payload["missing"]

    with caplog.at_level(logging.ERROR, logger="microfedi.tasks"):
        task_id = await enqueue_task(instance.db, buggy, {})
        await make_runner()
        await tasks_table.wait_for_states(dead=1)
    task = await tasks_table.task(task_id)  # type: ignore[arg-type]
    assert (task.attempts, task.last_error) == (2, "KeyError: 'missing'")
    bug_reports = [r for r in caplog.records if "failed with a bug" in r.getMessage()]
    assert len(bug_reports) == 2 and all(r.exc_info for r in bug_reports)


async def test_a_run_over_its_timeout_is_cut_off_and_retried(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    @registry.task_kind("hangs", priority=Priority.FETCH, timeout=0.05, max_attempts=2, backoff_base=0.01, backoff_cap=0.01)
    async def hangs(ctx: TaskContext, payload: Payload) -> None:
        await asyncio.sleep(60)

    task_id = await enqueue_task(instance.db, hangs, {})
    await make_runner()
    await tasks_table.wait_for_states(dead=1, timeout=3)
    assert (await tasks_table.task(task_id)).last_error == "timed out"  # type: ignore[arg-type]


async def test_completions_are_written_in_batches(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    @registry.task_kind("quick", priority=Priority.DELIVERY, concurrency=32, per_host=True)
    async def quick(ctx: TaskContext, payload: Payload) -> None:
        await asyncio.sleep(0)

    await enqueue_many_now(instance, quick, [NewTask({}, host=f"h{n}.example") for n in range(600)])
    await make_runner(max_concurrency=32)
    await tasks_table.wait_for_states(done=600, timeout=20)

    def transactions(conn: Connection) -> int:
        # Each cycle stamps its completions with one time: count the cycles.
        return conn.execute("SELECT count(DISTINCT finished_at) FROM tasks").fetchone()[0]

    assert await instance.db.read(transactions) <= 600 / 8


# ---------------------------------------------------------------- circuit breaker


class FlakyHosts:
    """A deliver handler whose hosts fail until they are marked healthy."""

    def __init__(self, *down: str) -> None:
        self.down = set(down)
        self.calls: dict[str, list[float]] = {}
        self.running: dict[str, int] = {}
        self.overlap: dict[str, int] = {}

    async def __call__(self, ctx: TaskContext, payload: Payload) -> None:
        host = ctx.host
        assert host is not None
        self.calls.setdefault(host, []).append(time.monotonic())
        self.overlap[host] = max(self.overlap.get(host, 0), self.running.get(host, 0))
        self.running[host] = self.running.get(host, 0) + 1
        try:
            await asyncio.sleep(0.01)
            if host in self.down:
                raise HostError(None, "connection refused")
        finally:
            self.running[host] -= 1

    def declare(self, registry: Registry, **rules: Any) -> TaskKind:
        """A per-host `deliver` kind, retrying fast, whose handler is this."""

        async def deliver(ctx: TaskContext, payload: Payload) -> None:
            await self(ctx, payload)

        return registry.task_kind(
            "deliver", priority=Priority.DELIVERY, per_host=True, max_attempts=100, backoff_base=0.01,
            backoff_cap=0.02, **rules,
        )(deliver)  # fmt: skip


async def test_a_failing_host_is_skipped_while_others_flow_then_probed_and_drained(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    hosts = FlakyHosts("down.example")
    kind = hosts.declare(registry, concurrency=16)
    await enqueue_many_now(
        instance, kind, [NewTask({}, host=h) for h in ("down.example", "up.example") for _ in range(10)]
    )
    circuit = HostCircuit(failure_threshold=3, base_cooldown=0.5, max_cooldown=5)
    await make_runner(circuit=circuit)

    async def opened() -> bool:
        return circuit.is_down("down.example", time.time())

    await tasks_table.wait_for(opened, what="the circuit to open")
    calls_when_opened = len(hosts.calls["down.example"])
    # Failures of runs under way at the moment it opened may still come in.
    assert 3 <= calls_when_opened <= 3 + circuit.host_limit
    await tasks_table.wait_for_states(done=10, queued=10, timeout=3)  # the other host is not held up
    await enqueue_task(instance.db, kind, {}, host="down.example")  # new work for it waits too
    await asyncio.sleep(0.2)
    assert len(hosts.calls["down.example"]) == calls_when_opened  # not claimed at all while down
    [row] = await instance.db.read(q.open_circuits)
    assert row.host == "down.example" and row.consecutive_failures == 3 and row.last_error == "connection refused"
    attempts = await instance.db.read(lambda c: c.execute("SELECT sum(attempts) FROM tasks WHERE host = 'down.example'").fetchone()[0])
    assert attempts == calls_when_opened  # waiting costs no attempts

    hosts.down.clear()
    await tasks_table.wait_for_states(done=21, timeout=3)
    after_recovery = sorted(hosts.calls["down.example"][calls_when_opened:])
    assert len(after_recovery) == 11
    probe = after_recovery[0]
    # The probe ran alone; the backlog followed once it had succeeded.
    assert after_recovery[1] - probe >= 0.01
    assert not await instance.db.read(q.open_circuits)
    assert not circuit.down_hosts(time.time())


async def test_a_failed_probe_reopens_the_circuit_for_longer(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    hosts = FlakyHosts("down.example")
    kind = hosts.declare(registry)
    await enqueue_many_now(instance, kind, [NewTask({}, host="down.example") for _ in range(6)])
    circuit = HostCircuit(failure_threshold=2, base_cooldown=0.3, max_cooldown=5, host_limit=1)
    await make_runner(circuit=circuit)

    async def reopened() -> bool:
        rows = await instance.db.read(q.open_circuits)
        return bool(rows) and rows[0].consecutive_failures == 3

    await tasks_table.wait_for(reopened, what="a failed probe")
    [row] = await instance.db.read(q.open_circuits)
    assert row.down_until is not None and row.last_failure_at is not None
    assert row.down_until - row.last_failure_at == pytest.approx(0.6)  # twice the first cooldown
    assert len(hosts.calls["down.example"]) == 3  # two failures, then one probe
    assert hosts.overlap["down.example"] == 0


# ---------------------------------------------------------------- crashes and shutdown


async def test_tasks_a_killed_process_left_running_run_again_when_a_runner_starts(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    done: list[int] = []

    @registry.task_kind("work", priority=Priority.LOCAL, concurrency=8)
    async def work(ctx: TaskContext, payload: Payload) -> None:
        done.append(payload["n"])

    await enqueue_many_now(instance, work, [NewTask({"n": n}) for n in range(5)])
    script = textwrap.dedent(
        """
        import asyncio, sys
        from pathlib import Path
        from microfedi.config import Settings
        from microfedi.instance import Instance
        from microfedi.tasks.registry import Priority, Registry
        from microfedi.tasks.runner import Runner

        registry = Registry()

        @registry.task_kind("work", priority=Priority.LOCAL, concurrency=8, timeout=3600)
        async def work(ctx, payload):
            print("started", payload["n"], flush=True)
            await asyncio.sleep(3600)

        async def main():
            instance = Instance(Settings(data_dir=Path(sys.argv[1])))
            await instance.open()
            await Runner(instance, registry=registry, poll_interval=0.05).start()
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(instance.settings.data_dir), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        started = [await asyncio.wait_for(process.stdout.readline(), 10) for _ in range(5)]
        assert sorted(started) == [f"started {n}\n".encode() for n in range(5)]
    finally:
        process.kill()  # SIGKILL: no shutdown code runs
        await process.wait()
    assert await tasks_table.states() == {"running": 5}
    leases = await instance.db.read(lambda c: [r[0] for r in c.execute("SELECT locked_until FROM tasks")])
    assert min(leases) > time.time() + 3000  # an hour's lease...

    await make_runner()
    waited = await tasks_table.wait_for_states(done=5, timeout=5)
    assert waited < 1  # ...not waited out: no runner was alive to hold it
    assert sorted(done) == [0, 1, 2, 3, 4]
    attempts = await instance.db.read(lambda c: [r[0] for r in c.execute("SELECT attempts FROM tasks")])
    assert attempts == [2] * 5  # the killed attempt counts


async def test_while_another_runner_lives_its_tasks_wait_for_their_leases_to_lapse(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    work = registry.task_kind("work", priority=Priority.LOCAL)(do_nothing)

    await make_runner(registry=Registry())  # alive, holding the runner lock, running nothing of ours
    await enqueue_many_now(instance, work, [NewTask({}) for _ in range(3)])
    ids = await instance.db.read(lambda c: [r[0] for r in c.execute("SELECT id FROM tasks")])
    now = time.time()
    # As if a live runner had claimed them, with leases that end in 0.5 s.
    await instance.db.write(q.mark_running, [(task_id, now + 0.5) for task_id in ids], now)
    await make_runner()
    await asyncio.sleep(0.3)
    assert await tasks_table.states() == {"running": 3}
    await tasks_table.wait_for_states(done=3, timeout=3)
    assert time.time() - now >= 0.5


async def test_a_late_completion_of_a_run_whose_lease_lapsed_changes_nothing(
    instance: Instance, registry: Registry, tasks_table: TaskTable
) -> None:
    work = registry.task_kind("work", priority=Priority.LOCAL)(do_nothing)

    task_id = await enqueue_task(instance.db, work, {})
    assert task_id is not None
    now = time.time()
    # Claimed (attempt 1), lapsed, claimed again (attempt 2) elsewhere.
    for _ in range(2):
        await instance.db.write(q.release_lapsed_leases, now + 1)
        await instance.db.write(q.mark_running, [(task_id, now)], now)
    await instance.db.write(q.apply_completions, [q.Completion.dead(task_id, 1, "stale run")], now)
    task = await tasks_table.task(task_id)
    assert (task.state, task.attempts, task.last_error) == ("running", 2, None)


async def test_stop_lets_short_runs_finish_and_releases_long_ones(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    started: set[str] = set()

    @registry.task_kind("job", priority=Priority.LOCAL, timeout=60)
    async def job(ctx: TaskContext, payload: Payload) -> None:
        started.add(payload["name"])
        await asyncio.sleep(payload["seconds"])

    short = await enqueue_task(instance.db, job, {"name": "short", "seconds": 0.05})
    long = await enqueue_task(instance.db, job, {"name": "long", "seconds": 60})
    runner = await make_runner()
    while started != {"short", "long"}:
        await asyncio.sleep(0.005)
    before = time.monotonic()
    await runner.stop(grace=0.3)
    assert time.monotonic() - before < 1.5
    assert (await tasks_table.task(short)).state == "done"  # type: ignore[arg-type]
    released = await tasks_table.task(long)  # type: ignore[arg-type]
    assert (released.state, released.attempts, released.locked_until) == ("queued", 0, None)
    assert runner.running == 0


async def test_after_stop_nothing_more_is_claimed(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    job = registry.task_kind("job", priority=Priority.LOCAL)(do_nothing)

    runner = await make_runner()
    await runner.stop()
    await enqueue_task(instance.db, job, {})
    await asyncio.sleep(0.2)
    assert await tasks_table.states() == {"queued": 1}


# ---------------------------------------------------------------- periodic reconcilers


async def test_a_periodic_kind_runs_at_start_and_again_every_interval(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable
) -> None:
    runs: list[float] = []

    @registry.task_kind("sweep", every=0.15)
    async def sweep(ctx: TaskContext, payload: Payload) -> None:
        runs.append(time.monotonic())
        if len(runs) == 2:
            raise RuntimeError("a bad sweep")

    runner = await make_runner(poll_interval=0.02)
    while len(runs) < 4:
        await asyncio.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert all(gap >= 0.15 for gap in gaps), gaps
    await runner.stop()
    rows = await instance.db.read(lambda c: c.execute("SELECT dedupe_key, state, attempts, priority FROM tasks").fetchall())
    assert [tuple(r) for r in rows] == [("periodic:sweep", "queued", 0, Priority.MAINTENANCE)]

    # A restart keeps the one row (and its schedule) rather than adding another.
    await make_runner()
    await asyncio.sleep(0.05)
    assert await tasks_table.states() in ({"queued": 1}, {"running": 1})
