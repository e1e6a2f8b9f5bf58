"""What every servicer shares in one server process: config, Redis, keys, scripts and caches."""

from __future__ import annotations

import dataclasses

import redis

from livestate.server.batcher import BeatBatcher
from livestate.server.catalogue import Catalogue
from livestate.server.config import Config
from livestate.server.epoch import EpochTracker
from livestate.server.keys import Keys
from livestate.server.locator import Locator
from livestate.server.scripts import Scripts


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
            batcher=BeatBatcher(
                client, scripts, batch_size=config.beat_batch_size, writers=config.beat_writers
            ),
        )

    def redis_wait(self, time_remaining: float | None) -> float:
        """How long a handler may wait on Redis: its deadline, capped so a frozen Redis turns
        into UNAVAILABLE rather than a hung thread."""
        cap = 2 * self.config.redis_timeout + 0.5
        return cap if time_remaining is None else max(0.0, min(cap, time_remaining))
