"""Garbage collection paced by the clock on the event loop, instead of by CPython's counter.

Why: an open Heartbeat stream keeps grpc.aio's read of its next message pending for one beat
interval (about 20 tracked objects: the coroutine, its future, the batch tag ...). CPython 3.11
starts a young collection after 700 allocations net of frees, and a free of any older object
counts too, so with a fleet beating the counter hardly moves while the young generation fills
with those pending reads: at 2,000 streams one young collection every ~3 s walked ~26,000
objects and stalled the loop 10-17 ms, the largest share of Match p99 (bench, 2026-11-28).
Collecting the older generations on a clock of their own only moved the stall: every open
stream's objects live in them, and a middle collection every 10 s took 55-60 ms at 5,000
streams.

So the pacer collects only the young generation, every `interval` (it then holds ~0.1 s of
survivors: 1-2 ms to walk at 5,000 streams), and freezes what survives (gc.freeze: no later
collection walks it; such objects are still freed as soon as nothing refers to them). A cycle
that was alive at a tick and dies later is reclaimed by a full collection (unfreeze, collect,
freeze again), at least every FULL_EVERY ticks (5 min at the default 0.1 s), and sooner when
the process's peak memory has grown by a quarter since the last one (one getrusage call per
tick; counting the frozen objects instead would walk them all: 60 ms at 5,000 streams). So a
fleet that connects gets its full collections while it connects, and a steady one every 5 min.
A full collection walks every live object: about 300 ms at 5,000 streams, so its pause is rare
but not short.

The pacer is one per process (the loop is shared by every server in it): the first server to
start it disables CPython's automatic collector, the last to stop unfreezes everything and
restores it. While it runs it owns gc.freeze: another caller's freeze is undone by its next
full collection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import resource
import threading

FULL_EVERY = 3_000
GROWTH = 1.25


class GcPacer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        full_every: int = FULL_EVERY,
    ) -> None:
        self._loop = loop
        self._full_every = full_every
        self._lock = threading.Lock()
        self._users = 0
        self._was_enabled = True
        self._interval = 0.0
        self._since_full = 0
        self._peak_after_full = 0
        self._timer: asyncio.TimerHandle | None = None

    def acquire(self, interval: float) -> bool:
        """Paces collection every `interval` seconds from now on; False (and nothing changes)
        when `interval` is 0, which leaves CPython's own collector in charge."""
        if interval <= 0:
            return False
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._interval, self._since_full, self._peak_after_full = interval, 0, 0
                self._was_enabled = gc.isenabled()
                gc.disable()
                self._loop.call_soon_threadsafe(self._schedule)
        return True

    def release(self) -> None:
        """Ends this user's pacing; the last one gets CPython's collector back before this
        returns (from any thread; the handover itself runs on the loop)."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._cancel()
            return
        handed_back: concurrent.futures.Future[None] = concurrent.futures.Future()

        def hand_back() -> None:
            self._cancel()
            handed_back.set_result(None)

        self._loop.call_soon_threadsafe(hand_back)
        handed_back.result(timeout=5)

    def _schedule(self) -> None:
        with self._lock:
            if self._users > 0 and self._timer is None:
                self._timer = self._loop.call_later(self._interval, self._tick)

    def _cancel(self) -> None:
        # On the loop, so that no tick can freeze anything after the collector is handed back.
        with self._lock:
            if self._users > 0:
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            gc.unfreeze()
            if self._was_enabled:
                gc.enable()

    def _tick(self) -> None:
        self._timer = None
        self._since_full += 1
        if self._full_due():
            gc.unfreeze()
            gc.collect(2)
            gc.freeze()
            self._since_full, self._peak_after_full = 0, peak_memory()
        else:
            gc.collect(0)
            gc.freeze()
        self._schedule()

    def _full_due(self) -> bool:
        return self._since_full >= self._full_every or peak_memory() > GROWTH * self._peak_after_full


def peak_memory() -> int:
    """The process's peak resident memory (KB on Linux): it only grows, so growth since the
    last full collection means the heap grew, perhaps by cycles only a full one reclaims."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
