"""The Redis connection: one blocking pool per server process, with timeouts on everything.

Timeouts are what turn a dead or frozen Redis into UNAVAILABLE instead of a hung RPC: connecting,
each reply, and waiting for a free pooled connection are all bounded by `redis_timeout`. One
immediate retry covers the common case of a pooled connection that died with a Redis restart.

Never a retry after a timeout: a command that timed out may still be queued in a frozen Redis,
and a resent copy would run after it when Redis thaws (redis-py's Retry retries timeouts unless
told otherwise). A broken connection is retried once; the command may have run before the
connection broke, which is why every script that writes is idempotent (a repeated Match returns
the job's lease, a repeated Release or Fail answers as the first did).
"""

from __future__ import annotations

from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from livestate.server.core.config import Config, sentinels
from livestate.server.store.replication import ReplicatedCluster, ReplicatedRedis

Acking = TypeVar("Acking", ReplicatedRedis, ReplicatedCluster)


class SentinelBlockingPool(redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool):
    """The master's address from the sentinels (asked again after every failover), with the
    blocking pool's bounded wait for a free connection."""


def connect(url: str | None, config: Config) -> redis.Redis:
    """The client for a Redis URL, or for the master the sentinels name (config.sentinel)."""
    if config.sentinel:
        return _sentinel_client(config)
    assert url is not None
    if config.redis_cluster:
        return _cluster_client(url, config)
    # TCP keepalive finds a peer that vanished without a FIN; a unix socket has no such option
    # (redis-py's unix connection refuses the keyword, and every call would fail).
    tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
    pool = redis.BlockingConnectionPool.from_url(url, **_pool_options(config), **tcp)
    # The client owns its pool: closing it closes every connection (a pool merely passed in is
    # left open, and its sockets linger until garbage-collected).
    client = ReplicatedRedis.from_pool(pool)
    assert isinstance(client, ReplicatedRedis)
    return _acking(client, config)


def _pool_options(config: Config) -> dict[str, Any]:
    return {
        "max_connections": config.redis_max_connections,
        "timeout": config.redis_timeout,
        "socket_timeout": config.redis_timeout,
        "socket_connect_timeout": config.redis_timeout,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        "client_name": "livestate",
    }


def _cluster_client(url: str, config: Config) -> redis.Redis:
    client = ReplicatedCluster.from_url(
        url,
        # Per node, as on one Redis: a caller beyond max_connections waits for a connection
        # (up to redis_timeout) instead of failing at once with "Too many connections".
        connection_pool_class=redis.BlockingConnectionPool,
        max_connections=config.redis_max_connections,
        timeout=config.redis_timeout,
        socket_timeout=config.redis_timeout,
        socket_connect_timeout=config.redis_timeout,
        socket_keepalive=True,
        decode_responses=True,
        # No retry of a timed-out or broken call (a copy may still run): the client refreshes its
        # slot map and the call answers UNAVAILABLE; MOVED and ASK are followed, as they say the
        # command did not run where it was sent.
        retry=Retry(NoBackoff(), 0),
        client_name="livestate",
    )
    assert isinstance(client, ReplicatedCluster)
    # RedisCluster serves the command API livestate uses (single-slot scripts, pipelines split
    # per node, pub/sub); the few places that differ ask isinstance(client, RedisCluster).
    return cast(redis.Redis, _acking(client, config))


def _sentinel_client(config: Config) -> redis.Redis:
    assert config.sentinel is not None
    timeouts = {"socket_timeout": config.redis_timeout, "socket_connect_timeout": config.redis_timeout}
    manager = redis.sentinel.Sentinel(sentinels(config.sentinel), sentinel_kwargs=timeouts)
    client = manager.master_for(
        config.sentinel_master,
        redis_class=ReplicatedRedis,
        connection_pool_class=SentinelBlockingPool,
        socket_keepalive=True,
        **_pool_options(config),
    )
    assert isinstance(client, ReplicatedRedis)
    return _acking(client, config)


def _acking(client: Acking, config: Config) -> Acking:
    client.ack_replicas = config.replicas_to_ack
    client.ack_timeout_ms = int(config.ack_timeout * 1000)
    return client


def describe(url: str | None, config: Config) -> str:
    """Where the data lives, for the log (no password)."""
    if config.sentinel:
        return f"sentinel {config.sentinel} master {config.sentinel_master!r}"
    shown = _without_password(str(url))
    return f"cluster seeded by {shown}" if config.redis_cluster else shown


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def text(value: object) -> str | None:
    """A reply from a client made with decode_responses=True, typed: str, or None for nil."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
