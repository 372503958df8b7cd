"""End to end: deliveries to remote servers that are down, hang, fail or are gone.

One publish reaches five remote servers on loopback, each followed through its
shared inbox: one healthy, one refusing connections, one that accepts and
never answers, one answering 500 and one answering 410. The healthy one must
get its delivery at once; the gone one's task dies after one try; the three
failing ones back off, their circuits open, their later deliveries wait
without being tried, and the one that recovers gets its backlog after the
cooldown while the others are probed once and stay down.

The Instance and its Runner run in the test process with the product's
`deliver` handler, HTTP client and circuit breaker, but with test-sized
timings (the product's backoff starts at 30 s and a circuit stays open for a
minute): a copy of the `deliver` kind with a short backoff and run timeout,
and a `HostCircuit` with a short cooldown. The remote servers are real https
servers on loopback, pinned by name with `resolve` as MICROFEDI_RESOLVE does.

The remote side (`InboxSink`) and the helpers before the local side
(`public_key_of`, `add_remote_followers`, `note_activity`, `wait_until`) are
shared with `test_crash.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import Result
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from microfedi.accounts import get_user
from microfedi.config import DATABASE_FILE, load_settings
from microfedi.federation import activities, delivery
from microfedi.federation.signatures import (
    SignatureError,
    load_public_key,
    parse_signed_request,
    verify_signed_request,
)
from microfedi.instance import Instance
from microfedi.store import directory as dq
from microfedi.store import federation as fq
from microfedi.store import tasks as q
from microfedi.store.database import Connection, Database
from microfedi.store.directory import AccountRow
from microfedi.tasks.circuit import HostCircuit
from microfedi.tasks.registry import Registry
from microfedi.tasks.runner import Runner

T = TypeVar("T")

LOCAL_DOMAIN = "alice.test"
LOCAL_HANDLE = f"alice@{LOCAL_DOMAIN}"

HEALTHY = "healthy.test"
REFUSING = "refusing.test"  # nothing listens on its port
SILENT = "silent.test"  # accepts the connection, never says a word
FAILING = "failing.test"  # answers 500 until it recovers
GONE = "gone.test"  # answers 410 Gone
DOWN_HOSTS = (REFUSING, SILENT, FAILING)

# Test-sized timings. Retry n waits [BASE * 2**n / 2, BASE * 2**n); a run that
# hangs is cut off after RUN_TIMEOUT; THRESHOLD failures in a row open a
# circuit for COOLDOWN seconds. COOLDOWN must outlast the slowest circuit to
# open (the silent host: three run timeouts plus two backoffs) with room left
# to watch that nothing is tried while all three are down.
BACKOFF_BASE = 0.2
RUN_TIMEOUT = 0.5
THRESHOLD = 3
COOLDOWN = 6.0
# "Promptly", for a delivery to a healthy host while others fail.
PROMPT = 2.0


# ---------------------------------------------------------------- remote side


@dataclass(frozen=True)
class Delivery:
    """One POST a sink received."""

    host: str
    activity_id: str
    at: float


class InboxSink:
    """The shared inboxes of remote servers: one ASGI app for many host names.

    Each POST to `/inbox` has its signature checked against the local
    author's public key with our signatures module (a bad one is answered 401
    and listed in `refused`), is recorded as a `Delivery` on arrival, waits
    `delay` seconds (a remote under load), and is answered with the status
    set for its Host in `status` (202 by default). The app runs in uvicorn's
    thread; the lists are only appended to, so the test can read them.
    """

    def __init__(self, public_key_pem: str, *, delay: float = 0.0) -> None:
        self.public_key = load_public_key(public_key_pem)
        self.delay = delay
        self.status: dict[str, int] = {}
        self.deliveries: list[Delivery] = []
        self.refused: list[str] = []
        self.app = Starlette(routes=[Route("/inbox", self.inbox, methods=["POST"])])

    async def inbox(self, request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:  # the sender died mid-request (the crash test kills it)
            return Response(status_code=400)
        host = request.headers.get("host", "")
        try:
            signed = parse_signed_request("POST", request.url.path, request.headers.items(), body, authority=host)
            verify_signed_request(signed, self.public_key)
        except SignatureError as exc:
            self.refused.append(f"{host}: {exc}")
            return Response(status_code=401)
        self.deliveries.append(Delivery(host, json.loads(body)["id"], time.time()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return Response(status_code=self.status.get(host, 202))

    def to(self, host: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.host == host]

    def first_arrival(self, host: str, activity_id: str) -> float | None:
        return next((d.at for d in self.deliveries if d.host == host and d.activity_id == activity_id), None)


def public_key_of(data_dir: Path, handle: str) -> str:
    """The public key PEM of a local account, read from the install's database."""
    username, domain = handle.split("@")
    with Database(data_dir / DATABASE_FILE) as db:
        account = db.read_sync(dq.find_account_by_handle, username, domain)
    assert account is not None, f"no account {handle}"
    return account.public_key_pem


def _follow_from_hosts(conn: Connection, followee: str, hosts: list[str]) -> None:
    for host in hosts:
        actor = f"https://{host}/users/reader"
        fields = {
            "host": host,
            "type": "Person",
            "username": "reader",
            "name": "",
            "summary": "",
            "inbox": f"{actor}/inbox",
            "shared_inbox": f"https://{host}/inbox",
            "key_id": f"{actor}#main-key",
        }
        fq.upsert_remote_actor(conn, actor, fields, host)
        fq.put_follow(conn, actor, followee, "accepted", f"{actor}#follow")


async def add_remote_followers(instance: Instance, account: AccountRow, hosts: Iterable[str]) -> None:
    """One accepted remote follower per host, each reached through its host's shared inbox."""
    await instance.db.write(_follow_from_hosts, instance.urls.actor(account), list(hosts))


def note_activity(instance: Instance, account: AccountRow, text: str) -> dict[str, Any]:
    """A public Create(Note) by `account`, addressed to its followers."""
    actor = instance.urls.actor(account)
    note = {
        "id": activities.activity_uri(actor),
        "type": "Note",
        "attributedTo": actor,
        "content": f"<p>{text}</p>",
        "to": [activities.PUBLIC],
        "cc": [instance.urls.followers(account)],
    }
    return activities.make("Create", actor, note)


def unused_port(address: str) -> int:
    """A port on `address` that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll `await check()` until it gives something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- local side


@pytest.fixture
def install(cli: Callable[..., Result], data_dir: Path) -> Path:
    """An initialised data dir with alice@alice.test."""
    for args in (("init",), ("domain", "add", LOCAL_DOMAIN), ("user", "add", LOCAL_HANDLE)):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return data_dir


def delivery_tasks(conn: Connection) -> dict[tuple[int, str], q.TaskRow]:
    """Every deliver task, by (activity row, inbox host)."""
    found = {}
    for task_id, payload in conn.execute("SELECT id, payload FROM tasks WHERE kind = 'deliver'"):
        task = q.get_task(conn, task_id)
        assert task is not None and task.host is not None
        found[json.loads(payload)["activity"], task.host] = task
    return found


def hosts_table(conn: Connection) -> dict[str, q.HostRow]:
    return {row.host: row for row in q.troubled_hosts(conn)}


class ScheduleWatch:
    """Records every state a set of tasks passes through, polling the table (for backoff gaps)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seen: dict[str, list[q.TaskRow]] = {}
        self.watching = True

    async def watch(self, activity_row: int, hosts: Iterable[str]) -> None:
        hosts = list(hosts)
        while self.watching:
            tasks = await self.db.read(delivery_tasks)
            for host in hosts:
                task = tasks[activity_row, host]
                history = self.seen.setdefault(host, [])
                if not history or (history[-1].state, history[-1].attempts, history[-1].run_at) != (
                    task.state, task.attempts, task.run_at
                ):
                    history.append(task)
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self.watching = False

    def retry_delays(self, host: str) -> list[float]:
        """For each failed attempt: how far ahead its retry was scheduled (run_at - time of failure)."""
        return [t.run_at - t.updated_at for t in self.seen[host] if t.state == q.QUEUED and t.attempts > 0]


async def microfedi_tasks(data_dir: Path) -> str:
    """`microfedi tasks` as an operator runs it, in another process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "microfedi", "--data-dir", str(data_dir), "tasks",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MICROFEDI_")},
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_a_down_slow_failing_or_gone_remote_delays_nobody_and_a_recovered_one_gets_its_backlog(
    install: Path, serve_asgi: Callable[..., Any], silent_server: Callable[..., Any], ca_bundle: Path
) -> None:
    sink = InboxSink(public_key_of(install, LOCAL_HANDLE))
    sink.status.update({FAILING: 500, GONE: 410})
    sink_server = serve_asgi(sink.app, address="127.0.0.2", tls_names=(HEALTHY, FAILING, GONE))
    silent = silent_server("127.0.0.3")
    settings = load_settings(install)
    settings.ca_bundle = str(ca_bundle)
    settings.resolve = ",".join(
        [
            *(sink_server.resolve_entry(host) for host in (HEALTHY, FAILING, GONE)),
            silent.resolve_entry(SILENT),
            f"{REFUSING}=127.0.0.4:{unused_port('127.0.0.4')}",
        ]
    )

    registry = Registry()
    registry.add(dataclasses.replace(delivery.deliver, backoff_base=BACKOFF_BASE, timeout=RUN_TIMEOUT))
    circuit = HostCircuit(failure_threshold=THRESHOLD, base_cooldown=COOLDOWN, max_cooldown=60.0)
    instance = Instance(settings)
    await instance.open()
    runner = Runner(instance, registry=registry, circuit=circuit)
    instance.runner = runner
    watch = ScheduleWatch(instance.db)
    try:
        await runner.start()
        alice = await get_user(instance.db, LOCAL_HANDLE)
        await add_remote_followers(instance, alice, (HEALTHY, REFUSING, SILENT, FAILING, GONE))

        # ---- one publish to all five
        first = note_activity(instance, alice, "first")
        published_at = time.time()
        first_row = await delivery.publish(instance, alice, first, to_followers=True)
        watcher = asyncio.create_task(watch.watch(first_row, DOWN_HOSTS))

        async def arrived(host: str, activity: dict[str, Any]) -> float | None:
            return sink.first_arrival(host, activity["id"])

        healthy_latency = await wait_until(lambda: arrived(HEALTHY, first), PROMPT, "the healthy host") - published_at
        assert healthy_latency < PROMPT

        async def gone_task() -> q.TaskRow | None:
            task = (await instance.db.read(delivery_tasks))[first_row, GONE]
            return task if task.state == q.DEAD else None

        dead = await wait_until(gone_task, 5, "the 410 task to die")
        assert dead.attempts == 1 and "410" in (dead.last_error or ""), dead
        assert len(sink.to(GONE)) == 1

        async def all_down() -> dict[str, q.HostRow] | None:
            hosts = await instance.db.read(hosts_table)
            now = time.time()
            down = {h: hosts[h] for h in DOWN_HOSTS if h in hosts and (hosts[h].down_until or 0) > now}
            return hosts if len(down) == len(DOWN_HOSTS) else None

        hosts = await wait_until(all_down, COOLDOWN, "all three circuits to open")
        watch.stop()
        await watcher
        tasks = await instance.db.read(delivery_tasks)
        for host in DOWN_HOSTS:
            task, row = tasks[first_row, host], hosts[host]
            assert row.consecutive_failures == THRESHOLD, row
            assert (task.state, task.attempts) == (q.QUEUED, THRESHOLD), task
            # The retry waits for the circuit, not just for its own backoff.
            assert task.run_at == row.down_until, (task, row)
            delays = watch.retry_delays(host)
            assert len(delays) == THRESHOLD, watch.seen[host]
            # Exponential: each retry is scheduled further ahead than the one before.
            assert BACKOFF_BASE * 0.9 < delays[0] < delays[1] < delays[2], (host, delays)
        assert len(sink.to(FAILING)) == THRESHOLD
        assert silent.connections == THRESHOLD
        assert "500" in (hosts[FAILING].last_error or "") and "timed out" in (hosts[SILENT].last_error or "")

        status = await microfedi_tasks(install)
        assert f"hosts down ({len(DOWN_HOSTS)}):" in status, status
        for host in DOWN_HOSTS:
            assert f"  {host}  down for" in status, status

        # ---- a second publish while three hosts are down
        second = note_activity(instance, alice, "second")
        published_at = time.time()
        second_row = await delivery.publish(instance, alice, second, to_followers=True)
        second_latency = await wait_until(lambda: arrived(HEALTHY, second), PROMPT, "the healthy host") - published_at
        assert second_latency < PROMPT

        # Nothing is tried for a host while its circuit is open.
        reopens_at = min(row.down_until or 0 for row in hosts.values() if row.host in DOWN_HOSTS)
        watched_for = reopens_at - 0.3 - time.time()
        assert watched_for > 0.5, "the circuits opened too late to watch them; raise COOLDOWN"
        await asyncio.sleep(watched_for)
        tasks = await instance.db.read(delivery_tasks)
        assert [tasks[first_row, h].attempts for h in DOWN_HOSTS] == [THRESHOLD] * 3
        assert [tasks[second_row, h].attempts for h in DOWN_HOSTS] == [0] * 3
        assert len(sink.to(FAILING)) == THRESHOLD and silent.connections == THRESHOLD

        # ---- the 500 host recovers; after its cooldown a probe closes the circuit
        sink.status[FAILING] = 202
        recovered_at = hosts[FAILING].down_until
        assert recovered_at is not None

        async def backlog_delivered() -> bool:
            received = {d.activity_id for d in sink.to(FAILING)}
            if not {first["id"], second["id"]} <= received:
                return False
            tasks = await instance.db.read(delivery_tasks)
            return all(tasks[row, FAILING].state == q.DONE for row in (first_row, second_row))

        await wait_until(backlog_delivered, COOLDOWN, "the recovered host's backlog")
        after_recovery = sink.to(FAILING)[THRESHOLD:]
        assert len(after_recovery) == 2, sink.to(FAILING)
        assert min(d.at for d in after_recovery) >= recovered_at - 0.05
        closed = (await instance.db.read(hosts_table)).get(FAILING)
        assert closed is None, f"{FAILING} is still troubled: {closed}"

        # ---- the others get one probe each, fail it, and stay down twice as long
        async def probed_again(host: str) -> q.HostRow | None:
            row = (await instance.db.read(hosts_table))[host]
            return row if row.consecutive_failures > THRESHOLD else None

        for host in (REFUSING, SILENT):
            row = await wait_until(functools.partial(probed_again, host), COOLDOWN + 2, f"{host} to be probed")
            assert row.consecutive_failures == THRESHOLD + 1, row
            assert row.down_until is not None and row.last_failure_at is not None
            assert row.down_until - row.last_failure_at == pytest.approx(2 * COOLDOWN, abs=0.1)
            tasks = await instance.db.read(delivery_tasks)
            assert tasks[first_row, host].attempts + tasks[second_row, host].attempts == THRESHOLD + 1
        assert silent.connections == THRESHOLD + 1
        assert sink.refused == []
        print(
            f"\nhealthy host served in {healthy_latency * 1000:.0f} ms and {second_latency * 1000:.0f} ms; "
            f"retry delays: { {h: [round(d, 2) for d in watch.retry_delays(h)] for h in DOWN_HOSTS} }"
        )
    finally:
        watch.stop()
        await runner.stop(grace=1)
        await instance.close()
