"""`/metrics`: the task loop in Prometheus text format (exposition format 0.0.4).

The figures operators of big servers say they watch, per task kind: queue
depth, processing rate and error rate (rate() of the counters), the retry
backlog, the dead, and how long the oldest due task has waited; plus hosts
down and the process's resident memory.

Access: loopback clients only, unless the setting `metrics_allow_remote` is
true, or the request carries `Authorization: Bearer <token>` matching the
setting `metrics_token` (microfedi.toml) or MICROFEDI_METRICS_TOKEN.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from microfedi.config import Settings
from microfedi.tasks.runner import KindCounters, Runner
from microfedi.tasks.status import QueueStatus, queue_status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class MetricFamily:
    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[MetricFamily]) -> str:
    """The text exposition of `families`."""
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            label_text = ",".join(f'{name}="{_escape_label(text)}"' for name, text in labels.items())
            lines.append(f"{family.name}{{{label_text}}} {_number(value)}" if label_text else f"{family.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def resident_memory_bytes() -> int | None:
    """The process's resident set size, where /proc tells it (Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def task_families(status: QueueStatus, counters: Mapping[str, KindCounters] | None) -> list[MetricFamily]:
    """The metric families for a queue status and, when a runner runs here, its counters."""
    queued = MetricFamily("microfedi_tasks_queued", "gauge", "Tasks waiting to run, due or scheduled later.")
    running = MetricFamily("microfedi_tasks_running", "gauge", "Tasks being run now.")
    retrying = MetricFamily("microfedi_tasks_retrying", "gauge", "Queued tasks that failed before (the retry backlog).")
    dead = MetricFamily("microfedi_tasks_dead", "gauge", "Tasks given up on, kept for inspection.")
    oldest = MetricFamily(
        "microfedi_tasks_oldest_due_age_seconds", "gauge", "How long the oldest due task has waited to be picked up."
    )
    for counts in status.kinds:
        queued.add(counts.queued, kind=counts.kind)
        running.add(counts.running, kind=counts.kind)
        retrying.add(counts.retrying, kind=counts.kind)
        dead.add(counts.dead, kind=counts.kind)
        oldest.add(status.oldest_due_age(counts), kind=counts.kind)
    families = [queued, running, retrying, dead, oldest]
    if counters is not None:
        processed = MetricFamily("microfedi_tasks_processed_total", "counter", "Runs finished since the server started.")
        succeeded = MetricFamily("microfedi_tasks_succeeded_total", "counter", "Runs that succeeded since the server started.")
        failed = MetricFamily("microfedi_tasks_failed_total", "counter", "Runs that failed since the server started.")
        for counts in status.kinds:
            kind_counters = counters.get(counts.kind, KindCounters())
            processed.add(kind_counters.processed, kind=counts.kind)
            succeeded.add(kind_counters.succeeded, kind=counts.kind)
            failed.add(kind_counters.failed, kind=counts.kind)
        families += [processed, succeeded, failed]
    hosts_down = MetricFamily("microfedi_hosts_down", "gauge", "Remote hosts whose circuit is open: skipped until a probe.")
    hosts_down.add(len(status.hosts_down()))
    families.append(hosts_down)
    return families


def metrics_token(settings: Settings) -> str:
    return str(settings.extra.get("metrics_token") or os.environ.get("MICROFEDI_METRICS_TOKEN") or "")


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def refusal(request: Request, settings: Settings) -> str | None:
    """Why this request may not read the metrics, or None if it may."""
    token = metrics_token(settings)
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
    if settings.metrics_allow_remote or (request.client is not None and _is_loopback(request.client.host)):
        return None
    if token:
        return "metrics are for loopback clients, or with the metrics bearer token\n"
    return "metrics are for loopback clients only (set metrics_allow_remote or metrics_token to allow others)\n"


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics; reads `app.state.instance` and, if set, `app.state.runner`."""
    instance = request.app.state.instance
    reason = refusal(request, instance.settings)
    if reason is not None:
        return PlainTextResponse(reason, 403)
    runner: Runner | None = getattr(request.app.state, "runner", None)
    known_kinds = runner.registry.names() if runner is not None else ()
    status = await queue_status(instance.db, known_kinds)
    families = task_families(status, runner.counters if runner is not None else None)
    rss = resident_memory_bytes()
    if rss is not None:
        memory = MetricFamily("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
        memory.add(rss)
        families.append(memory)
    return Response(render(families), media_type=CONTENT_TYPE)
