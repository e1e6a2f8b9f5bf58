"""Which incarnation of the Redis state this process is talking to (see lua/epoch.lua)."""

from __future__ import annotations

import threading

import redis

from livestate.server.keys import Keys
from livestate.server.scripts import Scripts


class EpochTracker:
    """Caches the current epoch. `refresh` (every sweep) asks Redis for its run_id and lets
    epoch.lua decide whether the state is the same one; registrations run epoch.lua with the last
    run_id seen, so a node registering right after a flush is stamped with the new epoch."""

    def __init__(self, client: redis.Redis, scripts: Scripts, keys: Keys) -> None:
        self._client = client
        self._scripts = scripts
        self._keys = keys
        self._lock = threading.Lock()
        self._run_id = ""
        self.current = 0

    def refresh(self) -> int:
        self._run_id = str(self._client.info("server").get("run_id", ""))
        return self.observe(self._scripts.call("epoch", [self._keys.epoch], [self._run_id]))

    def queue(self, pipe: redis.client.Pipeline) -> None:
        """Queues epoch.lua (with the run_id last seen) on a pipeline; pass its reply to observe."""
        self._scripts.add(pipe, "epoch", [self._keys.epoch], [self._run_id])

    def observe(self, reply: int | str) -> int:
        epoch = int(reply)
        with self._lock:
            # Epochs only grow; a slower concurrent refresh must not move the cache backwards.
            self.current = max(self.current, epoch)
            return self.current
