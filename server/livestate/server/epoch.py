"""Which incarnation of the Redis state this process is talking to (see lua/epoch.lua)."""

from __future__ import annotations

import threading

import redis

from livestate.server.keys import Keys
from livestate.server.scripts import Scripts


class EpochTracker:
    """Caches the current epoch. `refresh` asks Redis for its run_id and lets epoch.lua decide
    whether the state is the same one; it runs every sweep and before every registration."""

    def __init__(self, client: redis.Redis, scripts: Scripts, keys: Keys) -> None:
        self._client = client
        self._scripts = scripts
        self._keys = keys
        self._lock = threading.Lock()
        self._run_id = ""
        self.current = 0

    def refresh(self, *, check_run_id: bool = True) -> int:
        if check_run_id or not self._run_id:
            self._run_id = str(self._client.info("server").get("run_id", ""))
        epoch = int(self._scripts.call("epoch", [self._keys.epoch], [self._run_id]))
        with self._lock:
            # Epochs only grow; a slower concurrent refresh must not move the cache backwards.
            self.current = max(self.current, epoch)
            return self.current
