"""The partition catalogue (a global set of partition labels), cached for a moment per process.

Match reads it on every call, so it comes from memory; a partition new to this process appears
at once when this process registered it, and within `ttl` when another process did.
"""

from __future__ import annotations

import threading
import time

import redis

from livestate.server.keys import Keys, Partition


class Catalogue:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: float = 1.0) -> None:
        self._client = client
        self._keys = keys
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: list[Partition] = []
        self._read_at = -1.0

    def partitions(self, env: str = "", region: str | None = None, *, fresh: bool = False) -> list[Partition]:
        """Known partitions, filtered, ordered by label."""
        with self._lock:
            stale = fresh or time.monotonic() - self._read_at > self._ttl
        if stale:
            self._load()
        with self._lock:
            found = self._cached
        return [p for p in found if (not env or p.env == env) and (region is None or p.region == region)]

    def invalidate(self) -> None:
        with self._lock:
            self._read_at = -1.0

    def _load(self) -> None:
        found = []
        for label in self._client.smembers(self._keys.partitions):
            try:
                found.append(Partition.from_label(str(label)))
            except ValueError:
                continue
        found.sort(key=lambda p: p.label)
        with self._lock:
            self._cached = found
            self._read_at = time.monotonic()
