"""The event loop's paced garbage collector (gcpacing.py): cycles are still reclaimed with
CPython's automatic collector off, the generations come in their cadence, and the automatic
collector is back once the last server stops."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from livestate.server.gcpacing import GcPacer


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


def test_cyclic_garbage_is_reclaimed_with_the_automatic_collector_off(
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


def test_interval_zero_leaves_cpythons_collector_in_charge(loop: asyncio.AbstractEventLoop) -> None:
    gc.enable()
    assert not GcPacer(loop).acquire(0)
    assert gc.isenabled()


def test_the_automatic_collector_comes_back_when_the_last_user_releases(
    loop: asyncio.AbstractEventLoop,
) -> None:
    gc.enable()
    pacer = GcPacer(loop)
    pacer.acquire(0.01)
    pacer.acquire(0.01)
    pacer.release()
    assert not gc.isenabled()
    pacer.release()
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(loop: asyncio.AbstractEventLoop) -> None:
    gc.disable()
    pacer = GcPacer(loop)
    pacer.acquire(0.01)
    pacer.release()
    assert not gc.isenabled()


def test_older_generations_are_collected_on_their_own_slower_cadence(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def collect(generation: int = 2) -> int:
        seen.append(generation)
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    pacer = GcPacer(loop, middle_every=2, full_every=6)
    pacer.acquire(0.001)
    try:
        until(lambda: len(seen) >= 12)
    finally:
        pacer.release()
    assert seen[:12] == [0, 1, 0, 1, 0, 2] * 2
