"""Which incarnation of the Redis state this process is talking to (see lua/epoch.lua)."""

from __future__ import annotations

import threading
import time

import redis
import redis.cluster

from livestate.server.keys import Keys
from livestate.server.scripts import Scripts


class EpochTracker:
    """Caches the current epoch. `refresh` (every maintenance tick) asks Redis for its run_id and
    lets epoch.lua decide whether the state is the same one, advancing the state marker that
    tells a restart with the same data from an older snapshot; registrations read the epoch in
    their first round trip, so a node registering right after a wipe is stamped with the new one.

    The marker this process has seen is its memory of how far the state had come: a process
    that starts after Redis came back with an older snapshot cannot tell, but any process that
    was running (one is enough) does, and moves everyone to a new epoch."""

    def __init__(self, client: redis.Redis, scripts: Scripts, keys: Keys) -> None:
        self._client = client
        self._scripts = scripts
        self._keys = keys
        self._lock = threading.Lock()
        self.current = 0
        self.mark = 0

    def _run_id(self) -> str:
        """The run id of the Redis holding the epoch (on a cluster, that key's primary)."""
        if isinstance(self._client, redis.cluster.RedisCluster):
            node = self._client.get_node_from_key(self._keys.epoch)
            info = self._client.info("server", target_nodes=node)
        else:
            info = self._client.info("server")
        return str(info.get("run_id", ""))

    def refresh(self) -> int:
        run_id = self._run_id()
        return self.observe(self._scripts.call("epoch", [self._keys.epoch], [run_id, self.mark, 1]))

    def leave(self) -> None:
        """Until enter(): every record counts as stale (an epoch of now), so nothing read from the
        Redis being switched to is trusted before its epoch is known."""
        with self._lock:
            self.current = max(self.current, int(time.time() * 1000))

    def enter(self, since_ms: int) -> int:
        """Forgets what this process saw of the Redis it left and reads the epoch of the one it
        serves from now: a new epoch there unless one began at or after `since_ms` (see
        lua/epoch.lua), so records written before this process last left it count as stale."""
        reply = self._scripts.call("epoch", [self._keys.epoch], [self._run_id(), 0, 0, since_ms])
        # Only now: a failed call leaves leave()'s distrust in place.
        with self._lock:
            self.current = 0
            self.mark = 0
        return self.observe(reply)

    def queue(self, pipe: redis.client.Pipeline) -> None:
        """Queues a read of the epoch (starting one when the state has none) on a pipeline;
        pass its reply to observe."""
        self._scripts.add(pipe, "epoch", [self._keys.epoch], ["", self.mark, 0])

    def observe(self, reply: list[int | str]) -> int:
        epoch, mark = (int(v) for v in reply)
        with self._lock:
            # Epochs only grow; a slower concurrent refresh must not move the cache backwards.
            self.current = max(self.current, epoch)
            self.mark = max(self.mark, mark)
            return self.current
