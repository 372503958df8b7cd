"""Time-sortable 64-bit ids, snowflake style.

The upper 48 bits are milliseconds since the Unix epoch and the lower 16 a
per-process sequence that starts at a random point, so ids sort by creation
time, page correctly with `WHERE id < ?`, and two processes (server and CLI)
writing in the same millisecond are very unlikely to collide.
"""

from __future__ import annotations

import secrets
import threading
import time

_SEQUENCE_BITS = 16
_SEQUENCE_MASK = (1 << _SEQUENCE_BITS) - 1


class IdGenerator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._sequence = secrets.randbelow(1 << _SEQUENCE_BITS)

    def next_id(self, now: float | None = None) -> int:
        with self._lock:
            ms = int((time.time() if now is None else now) * 1000)
            if ms <= self._last_ms:
                # Same millisecond (or the clock stepped back): keep counting up
                # from the last id so ids stay unique and increasing.
                ms = self._last_ms
                self._sequence = (self._sequence + 1) & _SEQUENCE_MASK
                if self._sequence == 0:
                    ms += 1
            else:
                self._sequence = secrets.randbelow(1 << (_SEQUENCE_BITS - 2))
            self._last_ms = ms
            return (ms << _SEQUENCE_BITS) | self._sequence


def id_time(snowflake: int) -> float:
    """The creation time (Unix seconds) encoded in an id."""
    return (snowflake >> _SEQUENCE_BITS) / 1000


_generator = IdGenerator()
new_id = _generator.next_id


def id_at(timestamp: float) -> int:
    """An id that sorts at `timestamp` (a remote post's publication time).

    Recent and future times take the next ordinary id; older ones get random
    low bits, so the caller must be ready for a (rare) clash and try again.
    """
    if timestamp >= time.time() - 1:
        return new_id()
    return (int(timestamp * 1000) << _SEQUENCE_BITS) | secrets.randbelow(1 << _SEQUENCE_BITS)
