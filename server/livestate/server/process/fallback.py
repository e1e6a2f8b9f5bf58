"""A regional Redis with a central fallback: which one this process serves from.

Each process decides for itself, from its maintenance ticks: when the regional Redis has not
answered for `fallback_after` seconds it serves from the central one; while it does, it pings the
regional one every tick and goes back once it has answered for `fallback_return_after` seconds.

A switch points the one Redis client every part of the process shares at the other connection
pool, drops the event loop's connection and the pub/sub subscription, forgets what it cached of
the Redis it left (node locations, partitions, subcloud policies) and enters an epoch of the one
it serves from now. Nothing is copied between the two: the records in the Redis it comes to were
written before this process last left it (or never), so it starts a new epoch there (once, however
many processes arrive: see lua/epoch.lua); agents are told `resync_required` on their next beat
and register again with the jobs they run, which keep their slots.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable

import redis

from livestate.server.core.config import Config
from livestate.server.store import connection
from livestate.server.store.runtime import Runtime

log = logging.getLogger(__name__)

REGIONAL = "regional"
CENTRAL = "central"


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Fallback:
    def __init__(self, rt: Runtime, config: Config, on_switch: Callable[[str], None]) -> None:
        assert config.fallback_redis_url is not None
        self.rt = rt
        self.config = config
        self._on_switch = on_switch
        central = connection.connect(config.fallback_redis_url, config)
        self._pools = {REGIONAL: rt.client.connection_pool, CENTRAL: central.connection_pool}
        # Probes the regional Redis while serving from the central one (shares its pool), on a
        # thread of its own: a frozen regional Redis would hold each PING for redis_timeout, and
        # the maintenance thread that sweeps the central one must not wait for it.
        self._regional = redis.Redis(connection_pool=self._pools[REGIONAL])
        self._prober = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="regional-probe")
        self._probe: concurrent.futures.Future[bool] | None = None
        self.active = REGIONAL
        self.switches = 0
        # When this process last left each Redis (wall clock, ms): records older than that there
        # are stale when it comes back.
        self._left_ms = {REGIONAL: 0, CENTRAL: 0}
        self._silent_since: float | None = None
        self._silent_since_ms = 0
        self._answering_since: float | None = None
        # A switch whose epoch could not be entered yet (the Redis it came to did not answer).
        self._entering: int | None = None

    def observe(self, tick_ok: bool) -> None:
        """One maintenance tick's outcome on the Redis served from now."""
        now = time.monotonic()
        if self._entering is not None:
            self._enter(self._entering)
        if self.active == REGIONAL:
            if tick_ok:
                self._silent_since = None
            elif self._silent_since is None:
                self._silent_since, self._silent_since_ms = now, _wall_ms()
            elif now - self._silent_since >= self.config.fallback_after:
                # Another process may have come to the central Redis a little earlier in the
                # same outage; its epoch there stands.
                outage_ms = self._silent_since_ms - int(self.config.fallback_after * 1000)
                self._switch(CENTRAL, max(self._left_ms[CENTRAL], outage_ms))
            return
        answers = self._probed()
        if answers is None:  # the probe still waits on the regional Redis
            return
        if not answers:
            self._answering_since = None
        elif self._answering_since is None:
            self._answering_since = now
        elif now - self._answering_since >= self.config.fallback_return_after:
            self._switch(REGIONAL, self._left_ms[REGIONAL])

    def close(self) -> None:
        self._prober.shutdown(wait=False, cancel_futures=True)
        self._regional.close()
        for name, pool in self._pools.items():
            if name != self.active:
                pool.disconnect()

    def _probed(self) -> bool | None:
        """The last probe's answer once it is in (and the next probe started); None while it
        still runs."""
        if self._probe is not None and not self._probe.done():
            return None
        answered = self._probe.result() if self._probe is not None else None
        self._probe = self._prober.submit(self._regional_answers)
        return answered

    def _regional_answers(self) -> bool:
        try:
            return bool(self._regional.ping())
        except redis.exceptions.RedisError:
            return False

    def _switch(self, to: str, since_ms: int) -> None:
        left = self.active
        self.rt.epoch.leave()
        self.rt.client.connection_pool = self._pools[to]
        self.active = to
        self._left_ms[left] = _wall_ms()
        self._silent_since = self._answering_since = None
        self._probe = None  # an answer from before this switch says nothing now
        self.switches += 1
        log.warning("redis: switched from the %s redis to the %s one (switch %d)", left, to, self.switches)
        self.rt.batcher.reconnect()
        self.rt.notifier.reconnect()
        self.rt.locator.clear()
        self.rt.catalogue.invalidate()
        self.rt.subclouds.invalidate()
        self._enter(since_ms)
        self._on_switch(to)

    def _enter(self, since_ms: int) -> None:
        try:
            epoch = self.rt.epoch.enter(since_ms)
        except redis.exceptions.RedisError as exc:
            log.warning("redis: cannot read the %s redis's epoch yet: %s", self.active, exc)
            self._entering = since_ms
            return
        self._entering = None
        log.info("redis: serving from the %s redis, epoch %d", self.active, epoch)
