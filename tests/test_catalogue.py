"""The partition catalogue's cache: a partition this process catalogues shows at once, even
when a read of the catalogue was in flight at that moment."""

from __future__ import annotations

from typing import Any

import redis

from livestate.server.catalogue import Catalogue
from livestate.server.keys import Keys, Partition


def test_a_read_that_began_before_an_invalidation_does_not_look_fresh(redis_client: redis.Redis) -> None:
    keys = Keys("ls")
    catalogue = Catalogue(redis_client, keys, ttl=60.0)
    real = redis_client.smembers

    def racing(name: str) -> Any:
        # The maintenance thread's read answers before a Register catalogues its partition and
        # invalidates the cache, and stores its (older) answer after.
        before = real(name)
        redis_client.sadd(keys.partitions, "test/eu-west/0")
        catalogue.invalidate()
        return before

    redis_client.smembers = racing  # type: ignore[method-assign,assignment]
    try:
        assert catalogue.partitions(fresh=True) == []
    finally:
        redis_client.smembers = real  # type: ignore[method-assign]
    assert catalogue.partitions() == [Partition("test", "eu-west", 0)]
