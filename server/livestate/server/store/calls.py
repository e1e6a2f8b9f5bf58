"""One typed call per Lua script: its KEYS from the key builder, its ARGV from named parameters,
and a decoder of its reply to a dataclass (or a bool or int where the reply is one number).

Callers build a `ScriptCall` here and hand it to `Scripts` (call, call_many, add to a pipeline)
or to the batcher; nobody else builds an ARGV list or unpacks a reply by position. The ARGV
order and the reply shape are each script's header (lua/*.lua); test_calls.py checks every
wrapper against its header.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from livestate.server.store.connection import text
from livestate.server.store.keys import Partition, PartitionKeys, lease_partition
from livestate.server.store.scripts import ScriptCall
from livestate.v1 import lease_pb2

if TYPE_CHECKING:  # runtime.py builds the epoch tracker, which calls epoch() from here
    from livestate.server.store.runtime import Runtime

# --- what several scripts return: slots handed to waiting jobs (serve_waiting in lib/waiting.lua) ------


@dataclasses.dataclass(frozen=True)
class Assignment:
    job_id: str
    lease_id: str
    token: int
    expire_ms: int
    node_id: str
    scheduler_id: str

    @property
    def partition(self) -> Partition:
        return lease_partition(self.lease_id)

    def lease(self) -> lease_pb2.Lease:
        lease = lease_pb2.Lease(
            lease_id=self.lease_id, job_id=self.job_id, node_id=self.node_id, fencing_token=self.token
        )
        lease.expire_time.FromMilliseconds(self.expire_ms)
        return lease


def assignments(flat: Sequence[Any]) -> list[Assignment]:
    """Assignments from a reply tail: {job, lease_id, token, expire, node, scheduler}*."""
    out = []
    for i in range(0, len(flat) - len(flat) % 6, 6):
        job, lease, token, expire, node, sched = flat[i : i + 6]
        out.append(Assignment(str(job), str(lease), int(token), int(expire), str(node), str(sched)))
    return out


# KEYS of each partition script by the names its header gives them (<p>:<name>), in its order;
# "node" is the record of the node the call is for. test_calls.py reads them off the headers.
PARTITION_KEYS: dict[str, tuple[str, ...]] = {
    name: tuple(names.split())
    for name, names in {
        "register": "node alive suspect offline nodes models subclouds events meta leases fence wexp drains "
        "flagexp outbox",
        "beat": "node alive suspect events meta leases fence wexp outbox",
        "deregister": "node alive suspect offline events leases outbox",
        "forget": "node alive suspect offline nodes leases events outbox",
        "sweep": "alive suspect offline nodes models subclouds events meta leases fence wexp wmodels drains "
        "flagexp outbox",
        "match": "leases fence events meta wexp wmodels outbox",
        "renew": "leases outbox",
        "release": "leases events fence meta wexp flagexp outbox",
        "unwait": "wexp",
        "setflag": "events drains flagexp",
    }.items()
}


def _flag(reply: Any) -> bool:
    return bool(int(reply))


def _count(reply: Any) -> int:
    return int(reply)


# --- node life: register.lua, beat.lua, deregister.lua, forget.lua, sweep.lua --------------------


@dataclasses.dataclass(frozen=True)
class Registered:
    restarted: bool  # a previous boot of the node was replaced
    handed: list[Assignment]  # waiting jobs the node was handed at once


def register(
    rt: Runtime,
    pk: PartitionKeys,
    node_id: str,
    *,
    boot_id: str,
    state: int,
    vram_free_mb: int,
    models: str,
    subclouds: str,
    running_jobs: int,
    flags: Mapping[str, str],
    grants: Mapping[str, str],
    spec_fields: Sequence[str],
) -> ScriptCall[Registered]:
    args = (
        *rt.context(pk),
        node_id,
        boot_id,
        state,
        vram_free_mb,
        models,
        subclouds,
        running_jobs,
        json.dumps(dict(flags)) if flags else "",
        json.dumps(dict(grants)) if grants else "",
        *spec_fields,
    )
    return ScriptCall("register", pk.named(PARTITION_KEYS["register"], node_id), args, _registered)


def _registered(reply: Sequence[Any]) -> Registered:
    _code, restarted, _now, *handed = reply
    return Registered(bool(int(restarted)), assignments(handed))


# beat.lua codes
BEAT_APPLIED, BEAT_RESYNC, BEAT_STALE_SEQ, BEAT_VRAM_ABOVE_TOTAL = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Beaten:
    """What a beat's answer says besides the interval: beat.lua's code, and what the node is told
    of its flags (never SHADOW_BAN and the like: see notices in lib/control.lua)."""

    code: int  # BEAT_APPLIED, BEAT_RESYNC, BEAT_STALE_SEQ, BEAT_VRAM_ABOVE_TOTAL
    paused: bool = False
    notices: tuple[str, ...] = ()  # what the node is told of its flags
    handed: tuple[Assignment, ...] = ()


def beat(
    rt: Runtime,
    pk: PartitionKeys,
    node_id: str,
    *,
    boot_id: str,
    seq: int,
    state: int,
    vram_free_mb: int,
    running_jobs: int,
    operator_paused: bool,
) -> ScriptCall[Beaten]:
    args = (
        *rt.context(pk),
        node_id,
        boot_id,
        seq,
        state,
        vram_free_mb,
        running_jobs,
        int(operator_paused),
    )
    return ScriptCall("beat", pk.named(PARTITION_KEYS["beat"], node_id), args, _beaten)


def _beaten(reply: Sequence[Any]) -> Beaten:
    code, _now, *rest = reply
    if not rest:  # refused before it was applied
        return Beaten(int(code))
    paused, count, *rest = rest
    notices, handed = rest[: int(count)], rest[int(count) :]
    return Beaten(int(code), bool(int(paused)), tuple(str(n) for n in notices), tuple(assignments(handed)))


# deregister.lua codes
DEREGISTERED, DEREG_UNKNOWN, DEREG_OTHER_BOOT = 0, 1, 2


def deregister(
    rt: Runtime, pk: PartitionKeys, node_id: str, *, boot_id: str, retention_ms: int
) -> ScriptCall[int]:
    """Decodes to the code: DEREGISTERED, DEREG_UNKNOWN, DEREG_OTHER_BOOT."""
    args = (*rt.context(pk), node_id, boot_id, retention_ms)
    return ScriptCall(
        "deregister", pk.named(PARTITION_KEYS["deregister"], node_id), args, lambda reply: int(reply[0])
    )


def forget(rt: Runtime, pk: PartitionKeys, node_id: str) -> ScriptCall[bool]:
    """Decodes to whether the partition held the node."""
    return ScriptCall(
        "forget", pk.named(PARTITION_KEYS["forget"], node_id), (*rt.context(pk), node_id), _flag
    )


@dataclasses.dataclass(frozen=True)
class Swept:
    suspected: int
    offlined: int
    expired: int
    more: bool  # a stage hit the limit: call again
    empty: bool  # the partition holds nothing (may leave the catalogue)
    forgotten: list[str]  # node ids whose global locators to drop
    handed: list[Assignment]  # slots of expired leases given to waiting jobs
    unsettled: list[Assignment]  # outbox entries whose caller never settled them


def sweep(
    rt: Runtime,
    pk: PartitionKeys,
    *,
    retention_ms: int,
    offline_ttl_ms: int,
    limit: int,
    refresh: bool,
    outbox_age_ms: int,
) -> ScriptCall[Swept]:
    args = (*rt.context(pk), retention_ms, offline_ttl_ms, limit, int(refresh), outbox_age_ms)
    return ScriptCall("sweep", pk.named(PARTITION_KEYS["sweep"]), args, _swept)


def _swept(reply: Sequence[Any]) -> Swept:
    suspected, offlined, expired, more, empty, n_forgotten, *rest = reply
    forgotten, (n_handed, *rest) = rest[: int(n_forgotten)], rest[int(n_forgotten) :]
    handed, unsettled = rest[: 6 * int(n_handed)], rest[6 * int(n_handed) :]
    return Swept(
        int(suspected),
        int(offlined),
        int(expired),
        bool(int(more)),
        bool(int(empty)),
        [str(n) for n in forgotten],
        assignments(handed),
        assignments(unsettled),
    )


# --- jobs and leases: match.lua, renew.lua, release.lua, settle.lua, unwait.lua ------------------

CLAIMED, NONE, MORE, WAITING, OTHER_MODEL = 0, 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Matched:
    code: int  # CLAIMED, NONE, MORE, WAITING, OTHER_MODEL (match.lua)
    lease_id: str = ""
    token: int = 0
    expire_ms: int = 0
    node_id: str = ""
    cursor: str = ""  # MORE: where to go on from
    position: int = 0  # WAITING: jobs ahead of it
    other_model: str = ""  # OTHER_MODEL: the model the job already waits for

    def assignment(self, job_id: str, scheduler_id: str) -> Assignment:
        """The slot CLAIMED, as an assignment of the job to `scheduler_id`."""
        return Assignment(job_id, self.lease_id, self.token, self.expire_ms, self.node_id, scheduler_id)


def match(
    rt: Runtime,
    pk: PartitionKeys,
    job_id: str,
    *,
    model: str,
    min_vram_mb: int,
    gpu_models: Sequence[str],
    subcloud: str,
    labels: Mapping[str, str],
    excluded: Collection[str],
    lease_ttl_ms: int,
    policy: int,
    cursor: str,
    seed: int,
    scheduler: str,
    wait_ms: int,
    priority: int,
    isolated: Collection[str],
    granted: Collection[str],
) -> ScriptCall[Matched]:
    args = (
        *rt.context(pk),
        job_id,
        model,
        min_vram_mb,
        ",".join(gpu_models),
        subcloud,
        "\n".join(f"{k}={v}" for k, v in sorted(labels.items())),
        ",".join(sorted(excluded)),
        lease_ttl_ms,
        policy,
        rt.config.match_walk,
        cursor,
        seed,
        scheduler,
        1 if wait_ms > 0 else 0,
        priority,
        wait_ms,
        ",".join(sorted(isolated)),
        ",".join(sorted(granted)),
    )
    return ScriptCall("match", pk.named(PARTITION_KEYS["match"]), args, _matched)


def _matched(reply: Sequence[Any]) -> Matched:
    code = int(reply[0])
    if code == MORE:
        return Matched(code, cursor=str(reply[1]))
    if code == WAITING:
        return Matched(code, position=int(reply[1]))
    if code == OTHER_MODEL:
        return Matched(code, other_model=str(reply[1]))
    if code == CLAIMED:
        _, lease_id, token, expire_ms, node_id = reply
        return Matched(code, str(lease_id), int(token), int(expire_ms), str(node_id))
    return Matched(code)


# renew.lua and release.lua codes (0: renewed, or ended by this call)
RENEWED = ENDED = 0
NO_LEASE, STALE_TOKEN, ENDED_BEFORE = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Renewed:
    code: int  # RENEWED, NO_LEASE, STALE_TOKEN
    expire_ms: int
    job_id: str
    node_id: str
    scheduler_id: str


def renew(rt: Runtime, lease_id: str, *, token: int, ttl_ms: int) -> ScriptCall[Renewed]:
    pk = rt.keys.partition(lease_partition(lease_id))
    args = (*rt.context(pk), lease_id, token, ttl_ms)
    return ScriptCall("renew", pk.named(PARTITION_KEYS["renew"]), args, _renewed)


def _renewed(reply: Sequence[Any]) -> Renewed:
    code, expire_ms, job_id, node_id, sched = reply
    return Renewed(int(code), int(expire_ms), str(job_id), str(node_id), str(sched))


@dataclasses.dataclass(frozen=True)
class Ended:
    code: int  # ENDED, NO_LEASE, STALE_TOKEN, ENDED_BEFORE
    job_id: str
    node_id: str
    scheduler_id: str
    score: float  # the node's failure score after a failure
    flag: int  # the FlagKind newly set (0 = none)
    handed: tuple[Assignment, ...] = ()  # waiting jobs the freed slot went to


def release(rt: Runtime, lease_id: str, *, token: int, failed: bool, reason: str) -> ScriptCall[Ended]:
    cfg = rt.config
    pk = rt.keys.partition(lease_partition(lease_id))
    control_ttl = (max(cfg.quarantine_ttl, cfg.cooldown_ttl) + 10 * cfg.failure_half_life) * 1000
    args = (
        *rt.context(pk),
        lease_id,
        token,
        int(failed),
        int(cfg.failure_half_life * 1000),
        cfg.cooldown_score,
        int(cfg.cooldown_ttl * 1000),
        cfg.quarantine_score,
        int(cfg.quarantine_ttl * 1000),
        int(control_ttl),
        reason,
        int(cfg.job_ttl * 1000),
    )
    return ScriptCall("release", pk.named(PARTITION_KEYS["release"]), args, _ended)


def _ended(reply: Sequence[Any]) -> Ended:
    code, job_id, node_id, sched, score, flag, *rest = reply
    handed = tuple(assignments(rest)) if int(code) == ENDED else ()
    return Ended(int(code), str(job_id), str(node_id), str(sched), float(score), int(flag), handed)


# settle.lua statuses
SETTLED, ALREADY, HOLDS_OTHER = 1, 2, 0


@dataclasses.dataclass(frozen=True)
class Settled:
    status: int  # SETTLED, ALREADY, HOLDS_OTHER
    detail: str  # SETTLED: partitions it was waiting in; HOLDS_OTHER: the lease it holds


def settle(rt: Runtime, a: Assignment) -> ScriptCall[Settled]:
    args = (a.lease_id, a.node_id, int(rt.config.job_ttl * 1000))
    return ScriptCall("settle", (rt.keys.job(a.job_id),), args, settle_reply)


def settle_reply(reply: Sequence[Any]) -> Settled:
    """settle.lua's reply (public: settling rides in pipelines with other commands)."""
    status, detail = reply
    return Settled(int(status), str(text(detail) or ""))


def unwait(rt: Runtime, pk: PartitionKeys, job_id: str) -> ScriptCall[bool]:
    """Decodes to whether the job was waiting in the partition."""
    return ScriptCall("unwait", pk.named(PARTITION_KEYS["unwait"]), (*rt.context(pk), job_id), _flag)


# --- flags and membership: setflag.lua, grant.lua, membership.lua --------------------------------


def setflag(
    rt: Runtime,
    pk: PartitionKeys,
    node_id: str,
    *,
    kind: int,
    action: str,
    expire_ms: int,
    start_ms: int,
    meta: str,
    deadline_ms: int,
) -> ScriptCall[bool]:
    """Decodes to whether a flag of that kind was in force before."""
    args = (*rt.context(pk), node_id, kind, action, expire_ms, start_ms, meta, deadline_ms)
    return ScriptCall("setflag", pk.named(PARTITION_KEYS["setflag"]), args, _flag)


@dataclasses.dataclass(frozen=True)
class Granted:
    version: str  # of this change: above every earlier one of the subcloud
    changed: int  # nodes granted anew, or revoked from a grant


def grant(
    rt: Runtime, subcloud: str, node_ids: Sequence[str], *, action: str, meta: str
) -> ScriptCall[Granted]:
    return ScriptCall("grant", (rt.keys.grants(subcloud),), (action, meta, *node_ids), _granted)


def _granted(reply: Sequence[Any]) -> Granted:
    version, changed = reply
    return Granted(str(version), int(changed))


def membership(
    rt: Runtime, pk: PartitionKeys, node_ids: Sequence[str], *, subcloud: str, version: str, granted: bool
) -> ScriptCall[int]:
    """Decodes to how many control hashes took the change."""
    keys = tuple(pk.control(n) for n in node_ids)
    return ScriptCall("membership", keys, (*rt.context(pk), subcloud, version, int(granted)), _count)


# --- process roles and epochs: hold.lua, del_if_equal.lua, epoch.lua -----------------------------


def hold(key: str, *, token: str, lease_ms: int) -> ScriptCall[bool]:
    """Decodes to whether the caller holds the role now."""
    return ScriptCall("hold", (key,), (token, lease_ms), _flag)


def del_if_equal(key: str, expected: str, field: str = "") -> ScriptCall[bool]:
    """Decodes to whether the key (or field) was deleted."""
    return ScriptCall("del_if_equal", (key,), (expected, field), _flag)


@dataclasses.dataclass(frozen=True)
class EpochSeen:
    epoch_ms: int
    mark: int


def epoch(key: str, *, run_id: str, mark: int, advance: bool, since_ms: int = 0) -> ScriptCall[EpochSeen]:
    return ScriptCall("epoch", (key,), (run_id, mark, int(advance), since_ms), epoch_seen)


def epoch_seen(reply: Sequence[Any]) -> EpochSeen:
    """epoch.lua's reply (public: a registration reads epochs in its own pipeline)."""
    epoch_ms, mark = reply
    return EpochSeen(int(epoch_ms), int(mark))
