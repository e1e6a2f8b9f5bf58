"""Which incarnation of the Redis state this process is talking to (see lua/epoch.lua)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import redis
import redis.cluster

from livestate.server.store import calls
from livestate.server.store.keys import Keys, Partition
from livestate.server.store.scripts import Scripts

log = logging.getLogger(__name__)


class EpochTracker:
    """Caches the current epoch. `refresh` (every maintenance tick) asks Redis for its run_id and
    lets epoch.lua decide whether the state is the same one, advancing the state marker that
    tells a restart with the same data from an older snapshot; registrations read the epoch in
    their first round trip, so a node registering right after a wipe is stamped with the new one.

    The marker this process has seen is its memory of how far the state had come: a process
    that starts after Redis came back with an older snapshot cannot tell, but any process that
    was running (one is enough) does, and moves everyone to a new epoch.

    Each partition also keeps an epoch of its own, beside its data: on a Redis Cluster one
    shard can be wiped or restored from an older snapshot while the global epoch, on another
    shard, carries on. A partition epoch that moves on starts a new global epoch (one is enough
    for every process: see `since` in epoch.lua), so one epoch still stamps every record and a
    shard's loss resyncs every agent once, the healthy shards' too: simple and safe, at the cost
    of a resync nobody strictly needed."""

    def __init__(self, client: redis.Redis, scripts: Scripts, keys: Keys) -> None:
        self._client = client
        self._scripts = scripts
        self._keys = keys
        self._lock = threading.Lock()
        self.current = 0
        self.mark = 0
        # Per partition: (epoch, mark) as this process last saw them.
        self._parts: dict[Partition, tuple[int, int]] = {}

    def _run_ids(self, keys: Sequence[str]) -> list[str]:
        """The run id of the Redis holding each key (on a cluster, that key's primary)."""
        if not isinstance(self._client, redis.cluster.RedisCluster):
            run_id = str(self._client.info("server").get("run_id", ""))
            return [run_id] * len(keys)
        by_node: dict[str, str] = {}
        out = []
        for key in keys:
            node = self._client.get_node_from_key(key)
            if node.name not in by_node:
                by_node[node.name] = str(self._client.info("server", target_nodes=node).get("run_id", ""))
            out.append(by_node[node.name])
        return out

    def refresh(self, partitions: Sequence[Partition] = ()) -> int:
        parts = list(partitions)
        pkeys = [self._keys.partition(p).epoch for p in parts]
        run_ids = self._run_ids([*pkeys, self._keys.epoch])
        since = self._refresh_partitions(parts, pkeys, run_ids[:-1])
        seen = self._scripts.call(
            calls.epoch(self._keys.epoch, run_id=run_ids[-1], mark=self.mark, advance=True, since_ms=since)
        )
        return self.observe(seen)

    def _refresh_partitions(self, parts: list[Partition], pkeys: list[str], run_ids: list[str]) -> int:
        """Advances each partition's epoch marker; returns the newest epoch among partitions whose
        epoch moved on since this process last saw them (their state was lost), else 0."""
        if not parts:
            return 0
        with self._lock:
            marks = [self._parts.get(p, (0, 0))[1] for p in parts]
        marked = [
            calls.epoch(key, run_id=run_id, mark=mark, advance=True)
            for key, run_id, mark in zip(pkeys, run_ids, marks, strict=True)
        ]
        since = 0
        for p, seen in zip(parts, self._scripts.run_all(marked), strict=True):
            since = max(since, self._saw(p, seen))
        return since

    def partition_seen(self, partition: Partition) -> tuple[int, int]:
        """The partition's (epoch, mark) as this process last saw them; (0, 0) before it has."""
        with self._lock:
            return self._parts.get(partition, (0, 0))

    def _saw(self, partition: Partition, seen: calls.EpochSeen) -> int:
        """Records a partition's epoch; returns it when it moved on since this process last saw
        it (the partition's state was lost), else 0."""
        epoch, mark = seen.epoch_ms, seen.mark
        with self._lock:
            before, seen_mark = self._parts.get(partition, (0, 0))
            self._parts[partition] = (max(before, epoch), max(seen_mark, mark))
        if before and epoch > before:
            log.warning("partition %s lost its state (epoch %d -> %d)", partition.label, before, epoch)
            return epoch
        return 0

    def leave(self) -> None:
        """Until enter(): every record counts as stale (an epoch of now), so nothing read from the
        Redis being switched to is trusted before its epoch is known."""
        with self._lock:
            self.current = max(self.current, int(time.time() * 1000))

    def enter(self, since_ms: int) -> int:
        """Forgets what this process saw of the Redis it left and reads the epoch of the one it
        serves from now: a new epoch there unless one began at or after `since_ms` (see
        lua/epoch.lua), so records written before this process last left it count as stale."""
        seen = self._scripts.call(
            calls.epoch(
                self._keys.epoch,
                run_id=self._run_ids([self._keys.epoch])[0],
                mark=0,
                advance=False,
                since_ms=since_ms,
            )
        )
        # Only now: a failed call leaves leave()'s distrust in place.
        with self._lock:
            self.current = 0
            self.mark = 0
            self._parts.clear()
        return self.observe(seen)

    def queue(self, pipe: redis.client.Pipeline, partition: Partition) -> None:
        """Queues reads of the epoch and of `partition`'s epoch (starting either when there is
        none) on a pipeline; pass their two replies to observe_registration."""
        with self._lock:
            mark = self._parts.get(partition, (0, 0))[1]
        self._scripts.add(pipe, calls.epoch(self._keys.epoch, run_id="", mark=self.mark, advance=False))
        self._scripts.add(
            pipe, calls.epoch(self._keys.partition(partition).epoch, run_id="", mark=mark, advance=False)
        )

    def observe_registration(
        self, partition: Partition, reply: list[int | str], part_reply: list[int | str]
    ) -> int:
        """The epoch a registration into `partition` is stamped with, from the two raw replies of
        `queue` in the registration's own pipeline. A partition that lost its state starts a new
        epoch here and now, not at the next maintenance tick: a node stamped with the old one in
        between would be stale at once, and told to resync a second time."""
        self.observe(calls.epoch_seen(reply))
        since = self._saw(partition, calls.epoch_seen(part_reply))
        if not since or self.current >= since:
            return self.current
        return self.observe(
            self._scripts.call(
                calls.epoch(self._keys.epoch, run_id="", mark=self.mark, advance=False, since_ms=since)
            )
        )

    def observe(self, seen: calls.EpochSeen) -> int:
        epoch, mark = seen.epoch_ms, seen.mark
        with self._lock:
            # Epochs only grow; a slower concurrent refresh must not move the cache backwards.
            self.current = max(self.current, epoch)
            self.mark = max(self.mark, mark)
            return self.current
