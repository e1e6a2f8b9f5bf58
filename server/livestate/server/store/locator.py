"""node_id -> partition, for calls that name only a node (Beat, GetNode, Deregister).

The locator is a global key per node (its own slot), written by Register. Beats go through a
bounded in-process cache so the hot path costs no extra round trip; a cached partition that no
longer holds the node is detected by the beat script (unknown node) and looked up again.
"""

from __future__ import annotations

import collections
import threading
import time

import redis

from livestate.server.store.keys import Keys, Partition


class Locator:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: float, max_cached: int = 200_000) -> None:
        self._client = client
        self._keys = keys
        self.ttl_ms = int(ttl * 1000)
        # Refresh a locator's TTL at most this often per node; well inside the TTL itself.
        self._touch_every = max(1.0, ttl / 10)
        self._max = max_cached
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[str, tuple[Partition, float]] = collections.OrderedDict()

    def cached(self, node_id: str) -> Partition | None:
        """The cached partition, without a round trip (None: not cached)."""
        with self._lock:
            hit = self._cache.get(node_id)
            if hit is None:
                return None
            self._cache.move_to_end(node_id)
            return hit[0]

    def lookup(self, node_id: str, *, use_cache: bool = True) -> Partition | None:
        if use_cache:
            hit = self.cached(node_id)
            if hit is not None:
                return hit
        label = self._client.get(self._keys.locator(node_id))
        if label is None:
            self.forget(node_id)
            return None
        partition = Partition.from_label(str(label))
        self._remember(node_id, partition, time.monotonic())
        return partition

    def touch_due(self, node_id: str) -> bool:
        """True (once per period) when the caller should refresh the locator's TTL."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(node_id)
            if hit is None or now - hit[1] < self._touch_every:
                return False
            self._cache[node_id] = (hit[0], now)
            return True

    def remember(self, node_id: str, partition: Partition) -> None:
        self._remember(node_id, partition, time.monotonic())

    def forget(self, node_id: str) -> None:
        with self._lock:
            self._cache.pop(node_id, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def _remember(self, node_id: str, partition: Partition, touched: float) -> None:
        with self._lock:
            self._cache[node_id] = (partition, touched)
            self._cache.move_to_end(node_id)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
