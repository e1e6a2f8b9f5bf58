"""The partition catalogue (a global set of partition labels), cached for a moment per process.

Match reads it on every call, so it comes from memory; a partition new to this process appears
at once when this process registered it, and within `ttl` when another process did. So do the
idle-queue depths per model that order a Match's partitions (most idle capacity first): an
ordering only, never a decision, since the claim script looks at the queue itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import redis

from livestate.server.core.snapshot import Snapshot, Ticket
from livestate.server.store.keys import Keys, Partition

# The batcher's pipeline (script calls, plain commands) -> their replies.
Pipeline = Callable[[Sequence[Any], Sequence[Any]], Awaitable[tuple[list[Any], list[Any]]]]

# Models whose depths are cached at once; past it the cache starts over (names come from callers).
MAX_MODELS_CACHED = 1024


class Catalogue:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: float = 1.0) -> None:
        self._client = client
        self._keys = keys
        self._ttl = ttl
        self._lock = threading.Lock()
        # A partition this process just catalogued must not be missing for `ttl` (see Snapshot).
        self._labels: Snapshot[list[Partition]] = Snapshot([], ttl)
        self._depths: dict[str, tuple[float, dict[Partition, int]]] = {}

    def partitions(self, env: str = "", region: str | None = None, *, fresh: bool = False) -> list[Partition]:
        """Known partitions, filtered, ordered by label."""
        if fresh or self._labels.due():
            ticket = self._labels.begin()
            self._store(self._client.smembers(self._keys.partitions), ticket)
        return self._filtered(env, region)

    async def partitions_on_loop(self, pipeline: Pipeline, env: str = "") -> list[Partition]:
        """`partitions` from the event loop: a read that is due goes through `pipeline` (the
        batcher's), never a blocking client."""
        if self._labels.due():
            ticket = self._labels.begin()
            _, (labels,) = await pipeline([], [("SMEMBERS", self._keys.partitions)])
            self._store(labels, ticket)
        return self._filtered(env, None)

    def _filtered(self, env: str, region: str | None) -> list[Partition]:
        found = self._labels.value
        return [p for p in found if (not env or p.env == env) and (region is None or p.region == region)]

    def idle_depths(
        self, model: str, partitions: list[Partition], *, fresh: bool = False
    ) -> dict[Partition, int]:
        """How many idle slots each partition's queue for `model` held a moment ago."""
        now = time.monotonic()
        depths = None if fresh else self._cached_depths(model, partitions, now)
        if depths is None:
            pipe = self._client.pipeline(transaction=False)
            for p in partitions:
                pipe.zcard(self._keys.partition(p).idle_queue(model))
            depths = self._keep_depths(model, now, dict(zip(partitions, pipe.execute(), strict=True)))
        return {p: depths[p] for p in partitions}

    def _cached_depths(
        self, model: str, partitions: list[Partition], now: float
    ) -> dict[Partition, int] | None:
        """The depths read for `model` within the TTL, if they cover `partitions`."""
        with self._lock:
            read_at, depths = self._depths.get(model, (-1.0, {}))
        if now - read_at > self._ttl or any(p not in depths for p in partitions):
            return None
        return depths

    def _keep_depths(self, model: str, now: float, depths: dict[Partition, int]) -> dict[Partition, int]:
        with self._lock:
            if len(self._depths) > MAX_MODELS_CACHED:
                self._depths.clear()
            self._depths[model] = (now, depths)
        return depths

    async def idle_depths_on_loop(
        self, pipeline: Pipeline, model: str, partitions: list[Partition]
    ) -> dict[Partition, int]:
        """`idle_depths` from the event loop, a due read going through `pipeline`."""
        now = time.monotonic()
        depths = self._cached_depths(model, partitions, now)
        if depths is None:
            keys = [self._keys.partition(p).idle_queue(model) for p in partitions]
            _, counts = await pipeline([], [("ZCARD", key) for key in keys])
            depths = self._keep_depths(model, now, dict(zip(partitions, counts, strict=True)))
        return {p: depths[p] for p in partitions}

    def invalidate(self) -> None:
        self._labels.invalidate()

    def _store(self, labels: Iterable[Any], ticket: Ticket) -> None:
        found = []
        for label in labels:
            try:
                found.append(Partition.from_label(str(label)))
            except ValueError:
                continue
        found.sort(key=lambda p: p.label)
        self._labels.store(found, ticket)
