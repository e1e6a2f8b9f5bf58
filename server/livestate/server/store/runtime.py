"""What every servicer shares in one server process: config, Redis, keys, scripts and caches."""

from __future__ import annotations

import dataclasses

import redis

from livestate.server.core.config import Config
from livestate.server.store.batcher import BeatBatcher
from livestate.server.store.catalogue import Catalogue
from livestate.server.store.epoch import EpochTracker
from livestate.server.store.keys import Keys, PartitionKeys
from livestate.server.store.locator import Locator
from livestate.server.store.notify import Notifier
from livestate.server.store.scripts import Scripts
from livestate.server.store.subclouds import SubcloudCache


@dataclasses.dataclass
class Runtime:
    config: Config
    client: redis.Redis
    keys: Keys
    scripts: Scripts
    epoch: EpochTracker
    locator: Locator
    batcher: BeatBatcher
    catalogue: Catalogue
    notifier: Notifier
    subclouds: SubcloudCache

    @classmethod
    def build(cls, config: Config, client: redis.Redis) -> Runtime:
        keys = Keys(config.key_prefix)
        scripts = Scripts(client)
        return cls(
            config=config,
            client=client,
            keys=keys,
            scripts=scripts,
            epoch=EpochTracker(client, scripts, keys),
            locator=Locator(client, keys, ttl=config.node_ttl),
            catalogue=Catalogue(client, keys),
            notifier=Notifier(client, keys.assigned_channel),
            subclouds=SubcloudCache(client, keys, config.subcloud_cache_ttl),
            batcher=BeatBatcher(client, scripts, timeout=config.redis_timeout),
        )

    def context(self, pk: PartitionKeys) -> list[str | int]:
        """ARGV[1..18] of every partition script (see context() in lua/lib/base.lua)."""
        cfg = self.config
        return [
            *pk.bases(),
            pk.partition.label,
            int(cfg.suspect_after * 1000),
            int(cfg.offline_after * 1000),
            self.epoch.current,
            int(cfg.sweep_gap * 1000),
            int(cfg.node_ttl * 1000),
            int(cfg.forget_margin * 1000),
            cfg.events_maxlen,
        ]

    def redis_wait(self, time_remaining: float | None) -> float:
        """How long a handler may wait on Redis: its deadline, capped so a frozen Redis turns
        into UNAVAILABLE rather than a hung thread."""
        cap = 2 * self.config.redis_timeout + 0.5
        return cap if time_remaining is None else max(0.0, min(cap, time_remaining))
