"""The background loop of each server process: watch Redis, keep the epoch current, sweep liveness.

Every process runs it; sweeps are idempotent (sweep.lua), so more processes only mean more
frequent sweeps, never double transitions. Readiness follows Redis: the named health services
go NOT_SERVING while Redis does not answer and SERVING when it does again; the overall service
("") stays SERVING, so a Redis blip never takes every replica out of a load balancer at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from livestate.server.assignments import parse, settle
from livestate.server.keys import Partition
from livestate.server.runtime import Runtime
from livestate.server.scripts import Call

log = logging.getLogger(__name__)

# Rounds per tick when a partition has more due nodes than one sweep call moves.
MAX_ROUNDS = 20
# Refresh partition-wide TTLs once per this many ticks (it walks each partition's index catalogue).
REFRESH_EVERY = 20


class Maintenance:
    def __init__(self, rt: Runtime, on_ready_change: Callable[[bool], None]) -> None:
        self.rt = rt
        self._on_ready_change = on_ready_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)
        self.ready: bool | None = None
        self.ticks = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
                self._set_ready(True)
            except redis.exceptions.RedisError as exc:
                if self.ready is not False:
                    log.warning("redis not answering: %s", exc)
                self._set_ready(False)
            except Exception:
                log.exception("maintenance tick failed")
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
        epoch = rt.epoch.refresh()
        if before and epoch != before:
            log.warning(
                "redis state was lost or replaced (epoch %d -> %d): nodes will be told to resync",
                before,
                epoch,
            )
            rt.locator.clear()
        due = rt.catalogue.partitions(fresh=True)
        refresh = self.ticks % REFRESH_EVERY == 0
        for _ in range(MAX_ROUNDS):
            if not due:
                break
            due = self._sweep(due, refresh)
            refresh = False

    def _sweep(self, parts: list[Partition], refresh: bool) -> list[Partition]:
        rt, cfg = self.rt, self.rt.config
        calls: list[Call] = []
        for p in parts:
            pk = rt.keys.partition(p)
            calls.append(
                (
                    "sweep",
                    pk.sweep_keys(),
                    [
                        *rt.context(pk),
                        int(cfg.retention * 1000),
                        int((cfg.retention + cfg.forget_margin) * 1000),
                        cfg.sweep_batch,
                        1 if refresh else 0,
                    ],
                )
            )
        results = rt.scripts.call_many(calls)
        again, released = [], []
        for p, result in zip(parts, results, strict=True):
            if isinstance(result, Exception):
                raise result
            suspected, offlined, expired, more, n_forgotten, *rest = result
            forgotten, handed = rest[:n_forgotten], rest[n_forgotten:]
            if handed:  # slots of expired leases went to waiting jobs
                settle(rt, parse(handed))
            if suspected or offlined or expired or forgotten:
                log.info(
                    "sweep %s: %d suspect, %d offline, %d leases expired, %d forgotten",
                    p.label,
                    suspected,
                    offlined,
                    expired,
                    len(forgotten),
                )
            released += [(p, str(node_id)) for node_id in forgotten]
            if more:
                again.append(p)
        if released:
            rt.scripts.call_many(
                [("del_if_equal", [rt.keys.locator(node_id)], [p.label]) for p, node_id in released]
            )
            for _, node_id in released:
                rt.locator.forget(node_id)
        return again
