"""Garbage collection paced by the clock on the event loop, instead of by CPython's counter.

Why: an open Heartbeat stream keeps grpc.aio's read of its next message pending for one beat
interval (about 20 tracked objects: the coroutine, its future, the batch tag ...). CPython 3.11
starts a young collection after 700 allocations net of frees, and a free of any older object
counts too, so with a fleet beating the counter hardly moves while the young generation fills
with those pending reads: at 2,000 streams one young collection every ~3 s walked ~26,000
objects and stalled the loop 10-17 ms, the largest share of Match p99 (bench, 2026-11-28).

Paced, the young generation holds only `interval` worth of survivors (~1 ms to walk), and the
older generations, which hold every open stream's objects, are walked on a slow clock of their
own: the middle one every 100 intervals, a full collection every 3,000 (10 s and 5 min at the
default 0.1 s). Cyclic garbage (grpc.aio leaves a small cycle per call) is still reclaimed; what
outlives a middle collection waits for the next full one, which bounds it by minutes of garbage.

The pacer is one per process (the loop is shared by every server in it): the first server to
start it disables CPython's automatic collector, the last to stop restores it.
"""

from __future__ import annotations

import asyncio
import gc
import threading

MIDDLE_EVERY = 100
FULL_EVERY = 3_000


class GcPacer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        middle_every: int = MIDDLE_EVERY,
        full_every: int = FULL_EVERY,
    ) -> None:
        self._loop = loop
        self._middle_every, self._full_every = middle_every, full_every
        self._lock = threading.Lock()
        self._users = 0
        self._was_enabled = True
        self._interval = 0.0
        self._ticks = 0
        self._timer: asyncio.TimerHandle | None = None

    def acquire(self, interval: float) -> bool:
        """Paces collection every `interval` seconds from now on; False (and nothing changes)
        when `interval` is 0, which leaves CPython's own collector in charge."""
        if interval <= 0:
            return False
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._interval, self._ticks = interval, 0
                self._was_enabled = gc.isenabled()
                gc.disable()
                self._loop.call_soon_threadsafe(self._schedule)
        return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            self._loop.call_soon_threadsafe(self._cancel)
            if self._was_enabled:
                gc.enable()

    def _schedule(self) -> None:
        with self._lock:
            if self._users > 0 and self._timer is None:
                self._timer = self._loop.call_later(self._interval, self._tick)

    def _cancel(self) -> None:
        with self._lock:
            if self._users == 0 and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _tick(self) -> None:
        self._timer = None
        self._ticks += 1
        full, middle = self._ticks % self._full_every == 0, self._ticks % self._middle_every == 0
        generation = 2 if full else 1 if middle else 0
        gc.collect(generation)
        self._schedule()
