"""The per-host circuit breaker: a host that keeps failing is left alone for a while.

After `failure_threshold` consecutive failures the circuit opens: the host is
down until now + cooldown, and its tasks are not claimed at all (they wait
without burning attempts or timeouts). When that time has passed the circuit
is half-open: one task for the host is let through as a probe. Success closes
the circuit and the backlog flows again; failure reopens it with a cooldown
twice as long, up to `max_cooldown`.

The state lives in the `hosts` table (so the CLI and /metrics show it and it
survives restarts); this class is the runner's in-memory mirror, which the
claim path reads, and it collects the rows to write with the next batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from microfedi.store.tasks import HostRow


@dataclass
class HostState:
    consecutive_failures: int = 0
    down_until: float | None = None


@dataclass
class HostWrites:
    """Host rows to save, and the queued tasks of hosts to move in time.

    `defer_until`: host -> time its circuit opened until; its queued tasks wait
    till then. `undefer`: host -> that same time, for a circuit that closed
    early (a run under way succeeded): its deferred tasks may run now.
    """

    rows: list[HostRow] = field(default_factory=list)
    defer_until: dict[str, float] = field(default_factory=dict)
    undefer: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows or self.defer_until or self.undefer)


class HostCircuit:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        base_cooldown: float = 60.0,
        max_cooldown: float = 6 * 3600.0,
        host_limit: int = 4,
        success_record_interval: float = 600.0,
    ) -> None:
        if failure_threshold < 1 or host_limit < 1 or not 0 < base_cooldown <= max_cooldown:
            raise ValueError("HostCircuit needs failure_threshold >= 1, host_limit >= 1, 0 < base <= max cooldown")
        self.failure_threshold = failure_threshold
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self.host_limit = host_limit
        # A healthy host's last_success_at is written at most this often, so a
        # fan-out does not add a host write per delivery.
        self.success_record_interval = success_record_interval
        self._states: dict[str, HostState] = {}
        self._success_recorded_at: dict[str, float] = {}
        self._pending = HostWrites()

    def load(self, rows: Iterable[HostRow]) -> None:
        """Take the state saved in the `hosts` table (at start-up)."""
        for row in rows:
            self._states[row.host] = HostState(row.consecutive_failures, row.down_until)

    def cooldown(self, consecutive_failures: int) -> float:
        """How long a host stays down after opening at this many failures."""
        doublings = min(max(consecutive_failures - self.failure_threshold, 0), 64)
        return min(self.max_cooldown, self.base_cooldown * 2.0**doublings)

    def is_down(self, host: str, now: float) -> bool:
        state = self._states.get(host)
        return state is not None and state.down_until is not None and now < state.down_until

    def limits(self, now: float) -> dict[str, int]:
        """Hosts whose concurrency limit is not the default: 0 while down, 1 while half-open."""
        return {
            host: 0 if now < state.down_until else 1
            for host, state in self._states.items()
            if state.down_until is not None
        }

    def next_reopening(self, now: float) -> float | None:
        """When the next down host becomes half-open (the runner wakes then to probe it)."""
        times = [s.down_until for s in self._states.values() if s.down_until is not None and s.down_until > now]
        return min(times, default=None)

    def down_hosts(self, now: float) -> list[str]:
        return sorted(host for host in self._states if self.is_down(host, now))

    def record_success(self, host: str, now: float) -> None:
        state = self._states.pop(host, None)
        if state is not None and state.down_until is not None and now < state.down_until:
            # A run that was under way when the circuit opened succeeded: the
            # host is back, so its deferred tasks need not wait out the cooldown.
            if self._pending.defer_until.get(host) == state.down_until:
                del self._pending.defer_until[host]  # not applied yet: nothing to undo
            else:
                self._pending.undefer[host] = state.down_until
        troubled = state is not None and (state.consecutive_failures or state.down_until is not None)
        last_recorded = self._success_recorded_at.get(host)
        if troubled or last_recorded is None or now - last_recorded >= self.success_record_interval:
            self._success_recorded_at[host] = now
            self._pending.rows.append(HostRow(host, 0, None, None, now, None))

    def record_failure(self, host: str, reason: str, now: float) -> bool:
        """Count a failure; True when it opened the circuit."""
        state = self._states.setdefault(host, HostState())
        opened = False
        # Failures of runs that were already under way when the circuit opened
        # say nothing new about the host: they must not lengthen the cooldown.
        if not self.is_down(host, now):
            state.consecutive_failures += 1
            if state.consecutive_failures >= self.failure_threshold:
                state.down_until = now + self.cooldown(state.consecutive_failures)
                self._pending.defer_until[host] = state.down_until
                opened = True
        self._pending.rows.append(HostRow(host, state.consecutive_failures, state.down_until, reason, None, now))
        return opened

    def has_writes(self) -> bool:
        return bool(self._pending)

    def take_writes(self) -> HostWrites:
        """The writes collected since the last call, for the next batch."""
        writes, self._pending = self._pending, HostWrites()
        return writes

    def restore_writes(self, writes: HostWrites) -> None:
        """Put back writes whose transaction failed, before any collected since."""
        writes.rows.extend(self._pending.rows)
        writes.defer_until.update(self._pending.defer_until)
        writes.undefer.update(self._pending.undefer)
        self._pending = writes
