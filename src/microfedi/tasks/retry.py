"""What becomes of a task after a run: done, retried after a backoff, or dead.

The retry delay grows exponentially with "equal jitter": after attempt n it
is drawn uniformly from [d/2, d) where d = min(cap, base * 2**n). Unlike full
jitter (uniform from 0) a failing host never gets a retry right back, and the
ranges of successive attempts do not overlap, so the schedule always grows;
the random half still spreads a burst of failures (a host that went down
under a fan-out) over time instead of retrying them all at once.
"""

from __future__ import annotations

import random

from microfedi.store.tasks import Completion, TaskRow
from microfedi.tasks.errors import HostError, PermanentError, RetryableError
from microfedi.tasks.registry import TaskKind

# Enough for a traceback-less reason; a remote's whole error page is not.
MAX_ERROR_LENGTH = 2000


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first run)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    return (rng or random).uniform(ceiling / 2, ceiling)


def describe_error(error: BaseException) -> str:
    """The one-line reason kept in `last_error`."""
    if isinstance(error, (PermanentError, RetryableError)):
        text = str(error)
    elif isinstance(error, TimeoutError):
        text = "timed out"
    else:
        text = f"{type(error).__name__}: {error}"
    return text[:MAX_ERROR_LENGTH]


def after_success(kind: TaskKind, task: TaskRow, now: float) -> Completion:
    if kind.periodic:
        return _next_periodic_run(kind, task, now, error=None)
    return Completion.done(task.id, task.attempts)


def after_failure(
    kind: TaskKind, task: TaskRow, error: BaseException, now: float, rng: random.Random | None = None
) -> Completion:
    """Dead for a permanent error, when attempts or the retry window ran out; else a retry."""
    reason = describe_error(error)
    if kind.periodic:
        # A reconciler that failed just runs again at its next turn.
        return _next_periodic_run(kind, task, now, error=reason)
    if isinstance(error, PermanentError) or task.attempts >= task.max_attempts or now >= task.deadline:
        return Completion.dead(task.id, task.attempts, reason)
    delay = retry_delay(task.attempts, kind.backoff_base, kind.backoff_cap, rng)
    if isinstance(error, RetryableError) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    # The last try happens at the deadline rather than never.
    return Completion.retry(task.id, task.attempts, min(now + delay, task.deadline), reason)


def failed_host(task: TaskRow, error: BaseException) -> str | None:
    """The host whose circuit this failure counts against, if any.

    Host errors name their host (default: the task's); a run that hit its
    timeout while talking to a host counts against that host too.
    """
    if isinstance(error, HostError):
        return error.host.lower() if error.host else task.host
    if isinstance(error, TimeoutError):
        return task.host
    return None


def _next_periodic_run(kind: TaskKind, task: TaskRow, now: float, error: str | None) -> Completion:
    assert kind.every is not None
    run_at = now + kind.every
    return Completion.rescheduled(task.id, task.attempts, run_at, run_at + kind.retry_window, error)
