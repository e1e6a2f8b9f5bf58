"""The event loop's paced garbage collector (gcpacing.py): cycles are still reclaimed with
CPython's automatic collector off (young ones at the next tick, ones that outlived a tick by a
full collection), full collections come when memory grows or at the latest every
`full_every` ticks, and the automatic collector is back once the last user releases."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from livestate.server.api import gcpacing
from livestate.server.api.gcpacing import GcPacer


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.005)


def test_a_cycle_dropped_before_a_tick_is_reclaimed_with_the_automatic_collector_off(
    loop: asyncio.AbstractEventLoop,
) -> None:
    pacer = GcPacer(loop)
    assert pacer.acquire(0.01)
    try:
        assert not gc.isenabled()
        cycle = Cycle()
        gone = weakref.ref(cycle)
        del cycle
        until(lambda: gone() is None)
    finally:
        pacer.release()


def test_a_cycle_that_outlived_ticks_is_reclaimed_by_a_full_collection(
    loop: asyncio.AbstractEventLoop,
) -> None:
    pacer = GcPacer(loop, full_every=4)
    cycle = Cycle()
    gone = weakref.ref(cycle)
    assert pacer.acquire(0.01)
    try:
        until(lambda: gc.get_freeze_count() > 0)  # a tick froze it with everything else
        del cycle
        until(lambda: gone() is None)
    finally:
        pacer.release()


def test_interval_zero_leaves_cpythons_collector_in_charge(loop: asyncio.AbstractEventLoop) -> None:
    gc.enable()
    assert not GcPacer(loop).acquire(0)
    assert gc.isenabled()


def test_the_collector_is_handed_back_unfrozen_when_the_last_user_releases(
    loop: asyncio.AbstractEventLoop,
) -> None:
    gc.enable()
    pacer = GcPacer(loop)
    pacer.acquire(0.01)
    pacer.acquire(0.01)
    until(lambda: gc.get_freeze_count() > 0)
    pacer.release()
    assert not gc.isenabled()
    pacer.release()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_collector_that_was_off_stays_off(loop: asyncio.AbstractEventLoop) -> None:
    gc.disable()
    pacer = GcPacer(loop)
    pacer.acquire(0.01)
    pacer.release()
    assert not gc.isenabled()


def recording(monkeypatch: pytest.MonkeyPatch, peak: Callable[[], int]) -> list[str]:
    """Replaces the gc calls the pacer makes with a log of them."""
    seen: list[str] = []

    def collect(generation: int = 2) -> int:
        seen.append(f"collect{generation}")
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(gc, "unfreeze", lambda: seen.append("unfreeze"))
    monkeypatch.setattr(gcpacing, "peak_memory", peak)
    return seen


def collections_until(pacer: GcPacer, seen: list[str], full: int) -> list[str]:
    """Paces every millisecond until `full` full collections were made; the collections, in order."""
    pacer.acquire(0.001)
    try:
        until(lambda: seen.count("collect2") >= full)
    finally:
        pacer.release()
    return [event for event in seen if event.startswith("collect")]


def test_with_a_steady_heap_a_full_collection_comes_only_every_full_every_ticks(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recording(monkeypatch, lambda: 1000)
    ticks = collections_until(GcPacer(loop, full_every=6), seen, full=3)
    # The first tick finds memory grown from nothing; then only the clock calls one.
    assert ticks[:13] == ["collect2", *(["collect0"] * 5 + ["collect2"]) * 2]


def test_grown_memory_gets_a_full_collection_at_the_next_tick(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = iter([1000, 1000, 1100, 1200, 1300, *[1300] * 1000])
    seen = recording(monkeypatch, lambda: next(sizes))
    ticks = collections_until(GcPacer(loop, full_every=1000), seen, full=2)
    # Grown from 0 (full, then 1000 after it), 1100 and 1200 <= 1.25 x 1000, 1300 > 1.25 x 1000.
    assert ticks[:4] == ["collect2", "collect0", "collect0", "collect2"]
