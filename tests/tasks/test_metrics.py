"""/metrics: Prometheus text that parses, with the families operators watch, for allowed clients only."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from microfedi.instance import Instance
from microfedi.store import tasks as q
from microfedi.tasks.errors import PermanentError
from microfedi.tasks.metrics import CONTENT_TYPE, MetricFamily, metrics_endpoint, render
from microfedi.tasks.queue import NewTask, enqueue_many
from microfedi.tasks.registry import Priority, Registry, TaskContext
from microfedi.tasks.runner import Runner

if TYPE_CHECKING:
    from conftest import MakeRunner, TaskTable

Client = Callable[..., httpx.AsyncClient]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse(text: str) -> dict[str, dict[str, Any]]:
    """A strict little reader of the text format: family -> {type, help, samples{labels: value}}."""
    families: dict[str, dict[str, Any]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            families.setdefault(name, {"samples": {}})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("gauge", "counter"), line
            assert not families.get(name, {}).get("samples"), f"TYPE after samples: {line}"
            families.setdefault(name, {"samples": {}})["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, label_text, value = match.groups()
            assert name in families and "type" in families[name], f"sample before its TYPE: {line}"
            labels = tuple(_LABEL.findall(label_text or ""))
            assert ",".join(f'{k}="{v}"' for k, v in labels) == (label_text or ""), f"bad labels: {line}"
            families[name]["samples"][labels] = float(value)
    return families


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    if payload.get("fail"):
        raise PermanentError("HTTP 410 Gone")


@pytest.fixture
def client(instance: Instance) -> Client:
    """`client(address, runner=None)`: an httpx client for an app serving /metrics, as seen from `address`."""

    def make(address: str = "127.0.0.1", runner: Runner | None = None) -> httpx.AsyncClient:
        app = Starlette(routes=[Route("/metrics", metrics_endpoint)])
        app.state.instance = instance
        if runner is not None:
            app.state.runner = runner
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")

    return make


async def test_the_families_and_their_values(
    instance: Instance, registry: Registry, make_runner: MakeRunner, tasks_table: TaskTable, client: Client
) -> None:
    deliver = registry.task_kind("deliver", priority=Priority.DELIVERY, per_host=True)(handler)
    registry.task_kind("idle", priority=Priority.FETCH)(handler)
    items = [NewTask({}, host="a.example"), NewTask({}, host="b.example"), NewTask({"fail": True}, host="c.example")]
    await instance.db.write(lambda conn: enqueue_many(conn, deliver, items))
    runner = await make_runner()
    await tasks_table.wait_for_states(done=2, dead=1)
    later = [NewTask({}, host="d.example", run_at=time.time() + 600)]
    await instance.db.write(lambda conn: enqueue_many(conn, deliver, later))
    now = time.time()
    await instance.db.write(q.save_hosts, [q.HostRow("down.example", 5, now + 60, "refused", None, now)])

    async with client(runner=runner) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    families = parse(response.text)

    def value(name: str, **labels: str) -> float:
        return families[name]["samples"][tuple(labels.items())]

    assert value("microfedi_tasks_queued", kind="deliver") == 1
    assert value("microfedi_tasks_queued", kind="idle") == 0  # every known kind has its series
    assert value("microfedi_tasks_running", kind="deliver") == 0
    assert value("microfedi_tasks_retrying", kind="deliver") == 0
    assert value("microfedi_tasks_dead", kind="deliver") == 1
    assert value("microfedi_tasks_oldest_due_age_seconds", kind="deliver") == 0  # the queued one is not due
    assert value("microfedi_tasks_processed_total", kind="deliver") == 3
    assert value("microfedi_tasks_succeeded_total", kind="deliver") == 2
    assert value("microfedi_tasks_failed_total", kind="deliver") == 1
    assert families["microfedi_tasks_processed_total"]["type"] == "counter"
    assert value("microfedi_hosts_down") == 1
    assert 5_000_000 < value("process_resident_memory_bytes") < 2_000_000_000


async def test_without_a_runner_the_queue_is_still_shown(instance: Instance, registry: Registry, client: Client) -> None:
    kind = registry.task_kind("fetch", priority=Priority.FETCH)(handler)
    await instance.db.write(lambda conn: enqueue_many(conn, kind, [NewTask({}, run_at=time.time() - 30)]))
    async with client() as http:
        families = parse((await http.get("/metrics")).text)
    assert "microfedi_tasks_processed_total" not in families
    assert families["microfedi_tasks_oldest_due_age_seconds"]["samples"][(("kind", "fetch"),)] >= 30


def test_label_values_and_help_are_escaped() -> None:
    family = MetricFamily("x_total", "counter", "Back\\slash and\nnewline.")
    family.add(1.5, kind='a "quoted"\\kind\n')
    text = render([family])
    assert text == (
        "# HELP x_total Back\\\\slash and\\nnewline.\n"
        "# TYPE x_total counter\n"
        'x_total{kind="a \\"quoted\\"\\\\kind\\n"} 1.5\n'
    )
    assert parse(text)["x_total"]["samples"] == {(("kind", 'a \\"quoted\\"\\\\kind\\n'),): 1.5}


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_loopback_clients_may_read(client: Client, address: str) -> None:
    async with client(address) as http:
        assert (await http.get("/metrics")).status_code == 200


@pytest.mark.parametrize("address", ["203.0.113.9", "10.0.0.2", "2001:db8::1", "::ffff:192.0.2.1"])
async def test_other_clients_are_refused_with_a_reason(client: Client, address: str) -> None:
    async with client(address) as http:
        response = await http.get("/metrics")
    assert response.status_code == 403
    assert response.text == "metrics are for loopback clients only (set metrics_allow_remote or metrics_token to allow others)\n"
    assert "microfedi_" not in response.text


async def test_metrics_allow_remote_opens_them(instance: Instance, client: Client) -> None:
    instance.settings.metrics_allow_remote = True
    async with client("203.0.113.9") as http:
        assert (await http.get("/metrics")).status_code == 200


@pytest.mark.parametrize("where", ["settings", "environment"])
async def test_a_bearer_token_opens_them(
    instance: Instance, client: Client, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "settings":
        instance.settings.extra["metrics_token"] = "s3cret-token"
    else:
        monkeypatch.setenv("MICROFEDI_METRICS_TOKEN", "s3cret-token")
    async with client("203.0.113.9") as http:
        assert (await http.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})).status_code == 200
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 403 and "bearer token" in wrong.text
        assert (await http.get("/metrics")).status_code == 403
