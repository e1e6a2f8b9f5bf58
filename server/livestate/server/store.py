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

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from livestate.server.config import Config


def connect(url: str, config: Config) -> redis.Redis:
    # TCP keepalive finds a peer that vanished without a FIN; a unix socket has no such option
    # (redis-py's unix connection refuses the keyword, and every call would fail).
    tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=config.redis_max_connections,
        timeout=config.redis_timeout,
        socket_timeout=config.redis_timeout,
        socket_connect_timeout=config.redis_timeout,
        **tcp,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        client_name="livestate",
    )
    # The client owns its pool: closing it closes every connection (a pool merely passed in is
    # left open, and its sockets linger until garbage-collected).
    return redis.Redis.from_pool(pool)


def text(value: object) -> str | None:
    """A reply from a client made with decode_responses=True, typed: str, or None for nil."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
