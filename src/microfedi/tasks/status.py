"""The state of the queue for people: `microfedi tasks` and /metrics read it here."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from microfedi.store import tasks as q
from microfedi.store.database import Connection, Database

# "Done recently" in the status means done in this many seconds.
RECENT = 3600.0


@dataclass(frozen=True)
class QueueStatus:
    taken_at: float
    kinds: list[q.KindCounts]
    # Hosts whose circuit is open (down) or half-open (a probe is due or under way).
    open_circuits: list[q.HostRow]

    def oldest_due_age(self, counts: q.KindCounts) -> float:
        """Seconds the oldest due task of a kind has waited to be picked up (0: none waits)."""
        if counts.oldest_due_at is None:
            return 0.0
        return max(self.taken_at - counts.oldest_due_at, 0.0)

    def hosts_down(self) -> list[q.HostRow]:
        return [h for h in self.open_circuits if h.down_until is not None and h.down_until > self.taken_at]


async def queue_status(db: Database, known_kinds: Iterable[str] = ()) -> QueueStatus:
    """Counts per kind (every kind in the table, plus `known_kinds` with zeros) and open circuits."""

    def read(conn: Connection) -> QueueStatus:
        now = time.time()
        counts = q.counts_by_kind(conn, now, now - RECENT)
        for kind in known_kinds:
            counts.setdefault(kind, q.KindCounts(kind))
        return QueueStatus(now, [counts[kind] for kind in sorted(counts)], q.open_circuits(conn))

    return await db.read(read)


async def list_dead_tasks(db: Database, kind: str | None = None, limit: int = 50) -> list[q.TaskRow]:
    """Dead tasks, the most recently finished first."""
    return await db.read(q.dead_tasks, kind, limit)
