"""A value read from Redis and kept in memory for a short time: the one TTL cache the per-process
caches (the partition catalogue, subcloud policies) are built on.

`invalidate()` makes it due at once (this process just changed what it mirrors). A read that
began before an invalidate() is stored but never counts as fresh: otherwise an answer older than
the change would be served for a whole `ttl` by the very process that made the change.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Ticket:
    """Taken when a read begins; hand it back with what the read found."""

    generation: int
    started: float


class Snapshot(Generic[T]):
    def __init__(self, initial: T, ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value = initial
        self._read_at = -1.0
        self._generation = 0

    @property
    def value(self) -> T:
        with self._lock:
            return self._value

    def due(self) -> bool:
        with self._lock:
            return time.monotonic() - self._read_at > self._ttl

    def begin(self) -> Ticket:
        with self._lock:
            return Ticket(self._generation, time.monotonic())

    def store(self, value: T, ticket: Ticket) -> T:
        """Keeps what a read found, fresh from when it began if nothing was invalidated since."""
        with self._lock:
            self._value = value
            self._read_at = ticket.started if ticket.generation == self._generation else -1.0
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._read_at = -1.0
            self._generation += 1
