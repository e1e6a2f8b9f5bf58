"""The per-process caches (snapshot.py): a partition this process catalogues, or a subcloud
policy it puts, shows at once, even when a read was in flight at that moment."""

from __future__ import annotations

from typing import Any

import redis

from livestate.server.store.catalogue import Catalogue
from livestate.server.store.keys import Keys, Partition
from livestate.server.store.subclouds import SubcloudCache, to_json
from livestate.v1 import subcloud_service_pb2 as spb


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


def test_a_policy_read_in_flight_when_this_process_puts_one_does_not_hide_it(
    redis_client: redis.Redis,
) -> None:
    keys = Keys("ls")
    policies = SubcloudCache(redis_client, keys, ttl=60.0)
    real = redis_client.hgetall

    def racing(name: str) -> Any:
        # A Match's read answers before PutSubcloud writes and invalidates, and is stored after.
        before = real(name)
        redis_client.hset(keys.subcloud_policies, "acme", to_json(spb.Subcloud(name="acme", isolate=True)))
        policies.invalidate()
        return before

    redis_client.hgetall = racing  # type: ignore[method-assign,assignment]
    try:
        assert policies.isolated() == set()
    finally:
        redis_client.hgetall = real  # type: ignore[method-assign]
    assert policies.isolated() == {"acme"} and policies.granted() == {"acme"}
