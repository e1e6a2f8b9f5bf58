"""The one place that names Redis keys.

Shape: `<prefix>:{<env>/<region>/<shard>}:<kind>[:<id>]`. The `{...}` hash tag is the partition:
every key one Lua script touches carries the same tag, so every script runs unchanged on Redis
Cluster (one slot per partition). A partition is (env, region) with a shard number so that a hot
region can later be split into numbered sub-partitions without renaming keys.

Global keys (no tag, each in its own slot) hold only what must be found without knowing the
partition: a node's locator (node_id -> partition), the partition catalogue and the epoch. Scripts
never read them; the server passes what they say in ARGV.

Per-item keys inside a partition (model and subcloud indexes, node records walked by the sweeper)
are built in Lua from a tagged base that this module passes in ARGV, so they share the tag too.
"""

from __future__ import annotations

import dataclasses
import re

_LABEL_PART = re.compile(r"^[A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True, order=True)
class Partition:
    env: str
    region: str
    shard: int = 0

    @property
    def label(self) -> str:
        return f"{self.env}/{self.region}/{self.shard}"

    @classmethod
    def from_label(cls, label: str) -> Partition:
        env, region, shard = label.split("/")
        if not env or not _LABEL_PART.match(env) or not _LABEL_PART.match(region):
            raise ValueError(f"bad partition label {label!r}")
        return cls(env, region, int(shard))


class PartitionKeys:
    """Keys of one partition. Every name here hashes to the partition's slot."""

    def __init__(self, prefix: str, partition: Partition) -> None:
        self.partition = partition
        self.base = f"{prefix}:{{{partition.label}}}:"
        self.alive = self.base + "alive"
        self.suspect = self.base + "suspect"
        self.offline = self.base + "offline"
        self.nodes = self.base + "nodes"
        self.models = self.base + "models"
        self.subclouds = self.base + "subclouds"
        self.events = self.base + "events"
        self.meta = self.base + "meta"
        self.node_base = self.base + "node:"
        self.model_base = self.base + "model:"
        self.subcloud_base = self.base + "sub:"

    def node(self, node_id: str) -> str:
        return self.node_base + node_id

    def model_index(self, model: str) -> str:
        return self.model_base + model

    def subcloud_index(self, subcloud: str) -> str:
        return self.subcloud_base + subcloud

    def liveness_sets(self) -> list[str]:
        return [self.alive, self.suspect, self.offline, self.nodes]

    def bases(self) -> list[str]:
        """Key bases passed in ARGV, from which scripts derive per-item keys."""
        return [self.node_base, self.model_base, self.subcloud_base]

    # KEYS of each partition script, in the order its header lists them.

    def register_keys(self, node_id: str) -> list[str]:
        return [
            self.node(node_id),
            *self.liveness_sets(),
            self.models,
            self.subclouds,
            self.events,
            self.meta,
        ]

    def beat_keys(self, node_id: str) -> list[str]:
        return [self.node(node_id), self.alive, self.suspect, self.events, self.meta]

    def deregister_keys(self, node_id: str) -> list[str]:
        return [self.node(node_id), self.alive, self.suspect, self.offline, self.events]

    def forget_keys(self, node_id: str) -> list[str]:
        return [self.node(node_id), *self.liveness_sets()]

    def sweep_keys(self) -> list[str]:
        return [*self.liveness_sets(), self.models, self.subclouds, self.events, self.meta]


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch = f"{prefix}:epoch"
        self.partitions = f"{prefix}:partitions"
        self._cache: dict[Partition, PartitionKeys] = {}

    def locator(self, node_id: str) -> str:
        return f"{self.prefix}:loc:{node_id}"

    def partition(self, partition: Partition) -> PartitionKeys:
        keys = self._cache.get(partition)
        if keys is None:
            keys = self._cache.setdefault(partition, PartitionKeys(self.prefix, partition))
        return keys
