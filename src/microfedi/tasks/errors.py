"""How a handler says why it failed, which decides what happens next.

- `PermanentError`: retrying cannot help (410 Gone, a 4xx that will not
  change, a payload we cannot use). The task is dead at once.
- `RetryableError`: try again later, after a backoff (at least `retry_after`
  seconds when the remote said so, e.g. from a Retry-After header).
- `HostError`: a retryable failure of the remote host itself (connection
  refused, timeout, 5xx); it also counts against the host's circuit breaker.

Any other exception is a bug in the handler: the task is retried like a
`RetryableError` and the traceback is logged.
"""

from __future__ import annotations


class PermanentError(Exception):
    """The task can never succeed; mark it dead now and keep it for inspection."""


class RetryableError(Exception):
    """The task may succeed later; `retry_after` is the earliest sensible retry, in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class HostError(RetryableError):
    """The remote host failed us; counts towards opening its circuit.

    `host` None means the task's own host.
    """

    def __init__(self, host: str | None, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason, retry_after)
        self.host = host

    def __str__(self) -> str:
        return f"{self.host}: {self.reason}" if self.host else self.reason


HostDownError = HostError
"""The name reads better where a connection was refused or timed out."""
