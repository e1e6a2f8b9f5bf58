"""The background loop of each server process: watch Redis, keep the epoch current, sweep liveness.

Every process runs it, but only the one holding the sweeper lease (hold.lua) sweeps, so the
sweeps' Redis cost stays flat however many processes serve; when that one stops (or dies, and
its lease lapses after two sweep intervals) another takes over. Sweeps are idempotent
(sweep.lua), so a moment with two sweepers is harmless. Readiness follows Redis: the named health services
go NOT_SERVING while Redis does not answer and SERVING when it does again; the overall service
("") stays SERVING, so a Redis blip never takes every replica out of a load balancer at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable

import redis

from livestate.server.core import metrics
from livestate.server.domain.assignments import settle
from livestate.server.process.fallback import Fallback
from livestate.server.store import calls
from livestate.server.store.keys import Partition
from livestate.server.store.runtime import Runtime

log = logging.getLogger(__name__)

# Rounds per tick when a partition has more due nodes than one sweep call moves.
MAX_ROUNDS = 20
# Refresh partition-wide TTLs once per this many ticks (it walks each partition's index catalogue).
REFRESH_EVERY = 20


class Maintenance:
    def __init__(
        self, rt: Runtime, on_ready_change: Callable[[bool], None], fallback: Fallback | None = None
    ) -> None:
        self.rt = rt
        self._on_ready_change = on_ready_change
        # Told every tick's outcome: it decides when to serve from the other Redis.
        self._fallback = fallback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)
        self.ready: bool | None = None
        self.ticks = 0
        self.sweeps = 0
        self.token = uuid.uuid4().hex
        # Partitions seen empty by the sweep, and since when (monotonic); see _drop_empty.
        self._empty_since: dict[Partition, float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # Hand the role over at once rather than after the lease lapses.
        with contextlib.suppress(redis.exceptions.RedisError):
            self.rt.scripts.call(calls.del_if_equal(self.rt.keys.sweeper, self.token))

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            metrics.SWEEP_LAG.set(max(0.0, started - due))
            due = started + self.rt.config.sweep_interval
            ok = False
            try:
                self.tick()
                ok = True
                self._set_ready(True)
            except redis.exceptions.RedisError as exc:
                if self.ready is not False:
                    log.warning("redis not answering: %s", exc)
                self._set_ready(False)
            except Exception:
                log.exception("maintenance tick failed")
            if self._fallback is not None:
                try:
                    self._fallback.observe(ok)
                except Exception:
                    log.exception("redis fallback check failed")
            self.ticks += 1
            self._stop.wait(max(0.0, self.rt.config.sweep_interval - (time.monotonic() - started)))

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            if ready and self.ready is False:
                log.info("redis answering again")
            self.ready = ready
            self._on_ready_change(ready)

    def tick(self) -> None:
        """One pass: epoch check, then every partition swept until nothing due is left (bounded)."""
        rt = self.rt
        before = rt.epoch.current
        epoch = rt.epoch.refresh(rt.catalogue.partitions())
        if before and epoch != before:
            log.warning(
                "redis state was lost or replaced (epoch %d -> %d): nodes will be told to resync",
                before,
                epoch,
            )
            rt.locator.clear()
        lease_ms = int(2 * rt.config.sweep_interval * 1000) + 100
        if not rt.scripts.call(calls.hold(rt.keys.sweeper, token=self.token, lease_ms=lease_ms)):
            return
        self.sweeps += 1
        with metrics.SWEEP_SECONDS.time():
            due = rt.catalogue.partitions(fresh=True)
            refresh = self.ticks % REFRESH_EVERY == 0
            for _ in range(MAX_ROUNDS):
                if not due:
                    break
                due = self._sweep(due, refresh)
                refresh = False

    def _sweep(self, parts: list[Partition], refresh: bool) -> list[Partition]:
        rt, cfg = self.rt, self.rt.config
        sweeps = [
            calls.sweep(
                rt,
                rt.keys.partition(p),
                retention_ms=int(cfg.retention * 1000),
                offline_ttl_ms=int((cfg.retention + cfg.forget_margin) * 1000),
                limit=cfg.sweep_batch,
                refresh=refresh,
                outbox_age_ms=int(cfg.outbox_settle_after * 1000),
            )
            for p in parts
        ]
        again, released, empty = [], [], []
        for p, swept in zip(parts, rt.scripts.run_all(sweeps), strict=True):
            suspected, offlined, expired, more = swept.suspected, swept.offlined, swept.expired, swept.more
            forgotten = swept.forgotten
            if swept.handed:  # slots of expired leases went to waiting jobs
                settle(rt, swept.handed)
            if swept.unsettled:  # assignments whose caller never recorded them
                settle(rt, swept.unsettled, drain=True)
            if swept.empty:
                empty.append(p)
            if suspected or offlined or expired or forgotten:
                log.info(
                    "sweep %s: %d suspect, %d offline, %d leases expired, %d forgotten",
                    p.label,
                    suspected,
                    offlined,
                    expired,
                    len(forgotten),
                )
            if not swept.empty:
                self._empty_since.pop(p, None)
            released += [(p, str(node_id)) for node_id in forgotten]
            if more:
                again.append(p)
        if empty:
            self._drop_empty(empty)
        if released:
            rt.scripts.call_many(
                [calls.del_if_equal(rt.keys.locator(node_id), p.label) for p, node_id in released]
            )
            for _, node_id in released:
                rt.locator.forget(node_id)
        return again

    def _drop_empty(self, parts: list[Partition]) -> None:
        """Takes partitions that have held nothing for `drop_empty_after` out of the catalogue,
        so it does not grow with every env/region pair anyone ever named. A node registering
        there (or a job waiting there) puts its partition back: Register catalogues it before its
        script runs, and a partition found not empty again right after the removal is restored."""
        rt = self.rt
        now = time.monotonic()
        for p in parts:
            self._empty_since.setdefault(p, now)
        due = [p for p in parts if now - self._empty_since[p] >= rt.config.drop_empty_after]
        if not due:
            return
        pipe = rt.client.pipeline(transaction=False)
        pipe.srem(rt.keys.partitions, *(p.label for p in due))
        for p in due:
            pk = rt.keys.partition(p)
            for key in (pk.nodes, pk.leases, pk.wexp, pk.outbox):
                pipe.zcard(key)
        _, *sizes = pipe.execute()
        back = [p for i, p in enumerate(due) if any(sizes[4 * i : 4 * i + 4])]
        if back:
            rt.client.sadd(rt.keys.partitions, *(p.label for p in back))
        for p in due:
            self._empty_since.pop(p, None)
        rt.catalogue.invalidate()
        log.info("dropped %d empty partitions from the catalogue", len(due) - len(back))
