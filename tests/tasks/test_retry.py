"""Backoff and the fate of a failed run: retried, or dead and kept."""

from __future__ import annotations

import random
import statistics
from dataclasses import replace
from typing import Any

import pytest

from microfedi.store import tasks as q
from microfedi.tasks.errors import (
    HostDownError,
    HostError,
    PermanentError,
    RetryableError,
)
from microfedi.tasks.registry import Priority, Registry, TaskContext, TaskKind
from microfedi.tasks.retry import (
    after_failure,
    after_success,
    describe_error,
    failed_host,
    retry_delay,
)

NOW = 1_700_000_000.0


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


@pytest.fixture
def deliver(registry: Registry) -> TaskKind:
    return registry.task_kind(
        "deliver", priority=Priority.DELIVERY, max_attempts=5, retry_window=86400, backoff_base=30, backoff_cap=3600
    )(handler)


def claimed(attempts: int = 1, deadline: float = NOW + 86400, host: str | None = "remote.example") -> q.TaskRow:
    return q.TaskRow(
        id=42, kind="deliver", payload="{}", dedupe_key=None, priority=1, host=host, state="running",
        attempts=attempts, max_attempts=5, run_at=NOW, locked_until=NOW + 60, last_error=None,
        created_at=NOW - 10, updated_at=NOW, finished_at=None, deadline=deadline,
    )  # fmt: skip


def test_the_delay_grows_with_each_attempt_up_to_the_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        delays = [retry_delay(attempt, 30, 3600, rng) for _ in range(200)]
        ceiling = min(3600, 30 * 2**attempt)
        assert ceiling / 2 <= min(delays) and max(delays) < ceiling
    # Successive attempts draw from ranges that do not overlap: every second
    # retry waits longer than any first one.
    assert min(retry_delay(2, 30, 3600, rng) for _ in range(200)) >= max(retry_delay(1, 30, 3600, rng) for _ in range(200))
    assert max(retry_delay(50, 30, 3600, rng) for _ in range(200)) <= 3600


def test_the_delay_has_jitter() -> None:
    rng = random.Random(2)
    delays = [retry_delay(3, 30, 3600, rng) for _ in range(200)]
    assert len(set(delays)) == 200
    assert statistics.pstdev(delays) > 10


def test_a_retryable_failure_is_queued_after_a_backoff(deliver: TaskKind) -> None:
    completion = after_failure(deliver, claimed(attempts=2), RetryableError("HTTP 503"), NOW, random.Random(3))
    assert completion.state == q.QUEUED and completion.error == "HTTP 503"
    assert NOW + 60 <= completion.run_at < NOW + 120  # type: ignore[operator]


def test_retry_after_is_honoured(deliver: TaskKind) -> None:
    completion = after_failure(deliver, claimed(), RetryableError("HTTP 429", retry_after=900), NOW)
    assert completion.run_at == NOW + 900


def test_the_last_retry_happens_at_the_deadline_not_after(deliver: TaskKind) -> None:
    completion = after_failure(deliver, claimed(deadline=NOW + 5), RetryableError("slow"), NOW)
    assert completion.state == q.QUEUED and completion.run_at == NOW + 5


def test_a_permanent_error_is_dead_at_once(deliver: TaskKind) -> None:
    completion = after_failure(deliver, claimed(attempts=1), PermanentError("HTTP 410 Gone"), NOW)
    assert completion.state == q.DEAD and completion.error == "HTTP 410 Gone"


def test_running_out_of_attempts_or_time_is_dead_with_the_error_kept(deliver: TaskKind) -> None:
    out_of_attempts = after_failure(deliver, claimed(attempts=5), HostError(None, "connection refused"), NOW)
    assert out_of_attempts.state == q.DEAD and out_of_attempts.error == "connection refused"
    out_of_time = after_failure(deliver, claimed(attempts=2, deadline=NOW - 1), ValueError("bad"), NOW)
    assert out_of_time.state == q.DEAD and out_of_time.error == "ValueError: bad"


def test_a_periodic_kind_is_rescheduled_whatever_happened(registry: Registry) -> None:
    purge = registry.task_kind("purge", every=600)(handler)
    task = replace(claimed(attempts=3, host=None), kind="purge")
    for completion in (after_success(purge, task, NOW), after_failure(purge, task, PermanentError("no"), NOW)):
        assert completion.state == q.QUEUED and completion.run_at == NOW + 600 and completion.attempts == 0
    assert after_failure(purge, task, PermanentError("no"), NOW).error == "no"


def test_host_failures_count_against_the_host() -> None:
    task = claimed(host="a.example")
    assert failed_host(task, HostDownError(None, "refused")) == "a.example"
    assert failed_host(task, HostError("cdn.example", "refused")) == "cdn.example"
    assert failed_host(task, TimeoutError()) == "a.example"
    assert failed_host(task, RetryableError("HTTP 429")) is None
    assert failed_host(task, KeyError("bug")) is None


def test_errors_are_described_in_one_bounded_line() -> None:
    assert describe_error(HostError("a.example", "refused")) == "a.example: refused"
    assert describe_error(TimeoutError()) == "timed out"
    assert len(describe_error(RetryableError("x" * 10_000))) == 2000
