"""The one place that names Redis keys.

Shape: `<prefix>:{<env>/<region>/<shard>}:<kind>[:<id>]`. The `{...}` hash tag is the partition:
every key one Lua script touches carries the same tag, so every script runs unchanged on Redis
Cluster (one slot per partition). A partition is (env, region) with a shard number so that a hot
region can later be split into numbered sub-partitions without renaming keys.

Global keys (no tag, each in its own slot) hold only what must be found without knowing the
partition: a node's locator (node_id -> partition), the partition catalogue and the epoch. Scripts
never read them; the server passes what they say in ARGV. (Each partition also keeps an epoch of
its own, in its slot: see epoch.py.)

Per-item keys inside a partition (model and subcloud indexes, node records walked by the sweeper)
are built in Lua from a tagged base that this module passes in ARGV, so they share the tag too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

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


def lease_partition(lease_id: str) -> Partition:
    """The partition a lease id names (claim in lib/leases.lua makes them "<label>/<token in hex>", so
    Renew/Release/Fail find the lease without a lookup); ValueError when it is not one of ours."""
    label, _, unique = lease_id.rpartition("/")
    if not unique or not re.fullmatch(r"[0-9a-f]{8,64}", unique):
        raise ValueError(f"bad lease id {lease_id!r}")
    return Partition.from_label(label)


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
        self.leases = self.base + "leases"
        self.fence = self.base + "fence"
        self.wexp = self.base + "wexp"
        self.wait_models = self.base + "wmodels"
        self.drains = self.base + "drains"
        self.flagexp = self.base + "flagexp"
        # Assignments not yet recorded on their job (claim in lua/lib/leases.lua): the outbox that lets any
        # process finish what a crashed or timed-out caller could not.
        self.outbox = self.base + "outbox"
        # This partition's own epoch (lua/epoch.lua): on a cluster a shard can lose its data, or
        # come back from an older snapshot, while the global epoch on another shard carries on.
        self.epoch = self.base + "epoch"
        self.node_base = self.base + "node:"
        self.model_base = self.base + "model:"
        self.subcloud_base = self.base + "sub:"
        self.idle_base = self.base + "idle:"
        self.idlev_base = self.base + "idlev:"
        # Lease records are lease_base + lease_id ("<label>/<hex>"); the Lua helpers also derive
        # lease_base + "job:<job_id>" (the job's lease here) and + "tried:<job_id>" (nodes here
        # the job failed on) from it: job ids hold no '/', so the names never meet.
        self.lease_base = self.base + "lease:"
        self.nlease_base = self.base + "nlease:"
        self.ctl_base = self.base + "ctl:"
        self.wait_base = self.base + "wait:"
        self.wjob_base = self.base + "wjob:"
        # The partition-wide keys by the names script headers give them (<p>:<name>, each key's
        # own suffix), for calls.PARTITION_KEYS.
        self._named = {
            key.removeprefix(self.base): key
            for key in (
                *(self.alive, self.suspect, self.offline, self.nodes, self.models, self.subclouds),
                *(self.events, self.meta, self.leases, self.fence, self.wexp, self.wait_models),
                *(self.drains, self.flagexp, self.outbox),
            )
        }

    def node(self, node_id: str) -> str:
        return self.node_base + node_id

    def model_index(self, model: str) -> str:
        return self.model_base + model

    def subcloud_index(self, subcloud: str) -> str:
        return self.subcloud_base + subcloud

    def idle_queue(self, model: str) -> str:
        return self.idle_base + model

    def lease(self, lease_id: str) -> str:
        return self.lease_base + lease_id

    def control(self, node_id: str) -> str:
        return self.ctl_base + node_id

    def wait_queue(self, model: str) -> str:
        return self.wait_base + model

    def bases(self) -> list[str]:
        """The head of every partition script's context (lib/base.lua): the bases from which scripts
        derive per-item keys (base + id), in the order context() reads them."""
        return [
            self.node_base,
            self.model_base,
            self.subcloud_base,
            self.idle_base,
            self.idlev_base,
            self.lease_base,
            self.nlease_base,
            self.ctl_base,
            self.wait_base,
            self.wjob_base,
        ]

    def named(self, names: Sequence[str], node_id: str = "") -> list[str]:
        """Keys by the names script headers use: a partition-wide key, or "node" for the record of
        `node_id` (calls.PARTITION_KEYS lists each script's, in its header's order); KeyError for
        a name that is neither."""
        return [self.node(node_id) if name == "node" else self._named[name] for name in names]


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch = f"{prefix}:epoch"
        self.partitions = f"{prefix}:partitions"
        self._cache: dict[Partition, PartitionKeys] = {}

    @property
    def sweeper(self) -> str:
        """The process that sweeps (a short lease, hold.lua): one at a time, however many run."""
        return f"{self.prefix}:sweeper"

    def locator(self, node_id: str) -> str:
        return f"{self.prefix}:loc:{node_id}"

    def job(self, job_id: str) -> str:
        """The job's record: its live lease, the nodes it failed on, its attempts (global: a
        job may run in any partition)."""
        return f"{self.prefix}:job:{job_id}"

    def job_tried(self, job_id: str) -> str:
        """Nodes the job failed on: every later Match for the job skips them."""
        return f"{self.prefix}:jobtried:{job_id}"

    def pending_flags(self, node_id: str) -> str:
        """Flags set on a node that is not registered; copied into its partition when it is."""
        return f"{self.prefix}:pflags:{node_id}"

    @property
    def subcloud_policies(self) -> str:
        """Subcloud policies: name -> JSON of livestate.v1.Subcloud."""
        return f"{self.prefix}:subcloudpolicies"

    def grants(self, subcloud: str) -> str:
        """Nodes granted membership of the subcloud: node_id -> JSON {v, actor, reason, ms}, and
        '#v', the last version handed out (lua/grant.lua). The truth each registration reads;
        the claim script reads the copy in the node's control hash (lua/membership.lua)."""
        return f"{self.prefix}:grants:{subcloud}"

    @property
    def membership_audit(self) -> str:
        """The membership audit trail (capped stream): grants, revocations, refused claims."""
        return f"{self.prefix}:memberaudit"

    @property
    def flagged(self) -> str:
        """Nodes that have (or had) flags, score 0: what ListFlags pages over."""
        return f"{self.prefix}:flagged"

    @property
    def flag_audit(self) -> str:
        """The flag audit trail (capped stream)."""
        return f"{self.prefix}:flagaudit"

    def scheduler(self, scheduler_id: str) -> str:
        """Assignments not yet taken up by the scheduler (job_id -> lease_id): replayed on every
        Assignments stream until the scheduler renews, releases or fails the lease."""
        return f"{self.prefix}:sched:{scheduler_id}"

    @property
    def assigned_channel(self) -> str:
        """Pub/sub channel announcing assignments to every server process (a wake-up only: the
        job and scheduler records are the truth)."""
        return f"{self.prefix}:assigned"

    def partition(self, partition: Partition) -> PartitionKeys:
        keys = self._cache.get(partition)
        if keys is None:
            keys = self._cache.setdefault(partition, PartitionKeys(self.prefix, partition))
        return keys
