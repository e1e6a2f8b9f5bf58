"""Fixtures for the fault suite: a Redis process of the test's own, a livestate server on it, and
a history checked when the test ends.

tests/conftest.py's fixtures (redis_url, make_server, ls, ...) stay usable here: pytest applies
conftest files per directory, and `harness` imports by name because tests/ is on sys.path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from harness import FAST, Harness
from livestate.server import Config, LivestateServer

from .history import History
from .redisproc import RedisProc

FaultServerFactory = Callable[..., Harness]


def running_redis() -> Iterator[RedisProc]:
    """A fresh Redis process, started empty; thawed and killed when the generator ends."""
    proc = RedisProc()
    try:
        proc.start()
        yield proc
    finally:
        proc.close()


@pytest.fixture
def redisproc() -> Iterator[RedisProc]:
    """A fresh Redis process of the test's own, started empty (a test that wants an AOF shuts it
    down, wipes it and starts it with `persistent=True`). Thawed and killed at teardown, always."""
    yield from running_redis()


@pytest.fixture
def make_fault_server(redisproc: RedisProc) -> Iterator[FaultServerFactory]:
    """Starts livestate servers in-process on port 0 against the test's Redis, with FAST timings
    unless overridden; stops them all at teardown (before the Redis goes)."""
    yield from server_factory(lambda: redisproc.client(), redis_url=redisproc.url)


def server_factory(client: Callable[[], redis.Redis], **where: Any) -> Iterator[FaultServerFactory]:
    """Yields a factory of in-process servers on port 0 (FAST timings unless overridden, `where`
    names the Redis), each with a Harness whose helper client comes from `client`; stops them
    all when the generator ends (before the Redis goes)."""
    started: list[Harness] = []

    def factory(**overrides: Any) -> Harness:
        settings = {**FAST, **where, **overrides}
        server = LivestateServer(Config(listen="127.0.0.1:0", **settings))
        server.start()
        harness = Harness(server, client())
        started.append(harness)
        return harness

    yield factory
    for harness in started:
        harness.stop()


@pytest.fixture
def fault_server(make_fault_server: FaultServerFactory) -> Harness:
    return make_fault_server()


@pytest.fixture
def history() -> Iterator[History]:
    """The test's history; checked at teardown, failing the test on any violation."""
    recorded = History()
    yield recorded
    violations = recorded.check()
    if violations:
        pytest.fail(
            f"history check: {len(violations)} violation(s):\n" + "\n".join(violations), pytrace=False
        )
