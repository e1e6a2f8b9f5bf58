"""The job side of matching, shared by MatchService and QueueService: a job's record, the job's
live lease, and trying partitions in order.

Records (global keys; see keys.py):
    job:<id>       hash  lease (the live one, set first-writer-wins), node, attempts, waiting
                         (partition labels it waits in), model (what it waits for)
    jobtried:<id>  set   nodes the job failed on; every later match skips them

No lock is held for a job: match.lua is idempotent by job_id in its partition (a repeated or
concurrent call gets the lease the first one claimed), and across partitions the job record
keeps the first lease settled and gives the others back (assignments.settle).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Sequence
from typing import Any

import redis

from livestate.server.core.clock import timestamp
from livestate.server.core.errors import FailedPrecondition
from livestate.server.domain.assignments import Offload, end_lease, record, settle, unwait, wake_command
from livestate.server.store import calls
from livestate.server.store.calls import HOLDS_OTHER, SETTLED, Assignment, Settled
from livestate.server.store.connection import text
from livestate.server.store.keys import Partition, PartitionKeys, lease_partition
from livestate.server.store.reads import node_reads, nodes_from_replies, queue_node_reads, shaped
from livestate.server.store.runtime import Runtime
from livestate.server.store.scripts import ScriptCall
from livestate.v1 import lease_pb2, node_pb2

POLICY_NUMBERS = {0: 1, 1: 1, 2: 2, 3: 3}  # SelectionPolicy -> match.lua policy


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What a job needs (the job fields shared by MatchRequest and EnqueueRequest)."""

    job_id: str
    env: str
    model: str
    regions: Sequence[str]
    min_vram_mb: int
    gpu_models: Sequence[str]
    subcloud: str
    labels: dict[str, str]
    excluded: frozenset[str]
    lease_ttl_ms: int
    policy: int
    priority: int = 0
    # Subclouds whose members are not for this job (isolated ones it does not name).
    isolated: frozenset[str] = frozenset()
    # Of `subcloud` and `isolated`, those whose members need a grant (the claim script reads it).
    granted: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Prior:
    """What the job's record said before this call acted: its nodes tried, and the rest."""

    tried: set[str]
    record: dict[str, str]


def live_lease(
    rt: Runtime, job_id: str, lease_id: str | None
) -> tuple[lease_pb2.Lease, node_pb2.Node] | None:
    """The job's lease and its node while the lease lives, else None."""
    if not lease_id:
        return None
    try:
        pk = rt.keys.partition(lease_partition(lease_id))
    except ValueError:
        return None
    pipe = rt.client.pipeline(transaction=False)
    pipe.hmget(pk.lease(lease_id), ["job", "node", "token", "exp", "done"])
    pipe.execute_command("TIME")  # not pipe.time(): the cluster pipeline refuses it
    (job, node_id, token, expire, done), (seconds, micros) = pipe.execute()
    if job != job_id or done or int(expire or 0) <= int(seconds) * 1000 + int(micros) // 1000:
        return None
    pipe = rt.client.pipeline(transaction=False)
    queue_node_reads(pipe, pk, [node_id])
    (node,) = nodes_from_replies(rt, [node_id], pipe.execute())
    lease = lease_pb2.Lease(
        lease_id=lease_id,
        job_id=job_id,
        node_id=node_id,
        fencing_token=int(token),
        expire_time=timestamp(int(expire)),
    )
    return lease, node or node_pb2.Node()


def prior(rt: Runtime, job_id: str) -> Prior | tuple[lease_pb2.Lease, node_pb2.Node]:
    """The job's live lease when it holds one (the idempotent answer), else what its record says.
    A record pointing at a lease that has ended is cleared, so the job can be matched again."""
    pipe = rt.client.pipeline(transaction=False)
    pipe.hgetall(rt.keys.job(job_id))
    pipe.smembers(rt.keys.job_tried(job_id))
    raw, tried = pipe.execute()
    record = {str(k): str(v) for k, v in raw.items()}
    if record.get("lease"):
        live = live_lease(rt, job_id, record["lease"])
        if live is not None:
            return live
        rt.scripts.call(calls.del_if_equal(rt.keys.job(job_id), record["lease"], "lease"))
        del record["lease"]
    return Prior({str(n) for n in tried}, record)


def check_same_job(job: JobSpec, record: dict[str, str]) -> None:
    """A job_id names one job: a waiting job asked for again with another model is refused."""
    if record.get("waiting") and record.get("model", job.model) != job.model:
        raise FailedPrecondition(
            f"job {job.job_id!r} is waiting for model {record['model']!r}: cancel it or use a new job_id",
            reason="JOB_ID_CONFLICT",
        )


def settle_own(rt: Runtime, a: Assignment) -> tuple[lease_pb2.Lease, node_pb2.Node] | None:
    """Settles the assignment a plain Match just claimed and reads its node in the same round
    trip; the lease and node to answer, or None when the job holds another lease (settle()
    then gives this one back). The outbox entry is cleared with the next batch: were that lost,
    a sweep would find it settled already."""
    pk = rt.keys.partition(a.partition)

    def build(pipe: redis.client.Pipeline) -> None:
        record(rt, pipe, a, wake=False)  # a waiting copy of the job is woken by _settled
        queue_node_reads(pipe, pk, [a.node_id])

    settled, *reads = rt.scripts.pipeline(build)
    return _settled(rt, a, calls.settle_reply(settled), reads)


async def settle_own_on_loop(
    rt: Runtime, a: Assignment, offload: Offload
) -> tuple[lease_pb2.Lease, node_pb2.Node] | None:
    """`settle_own` from the event loop, through the batcher; what needs more round trips (the
    job holds another lease, or waited elsewhere too) goes on a worker thread."""
    reads = node_reads(rt.keys.partition(a.partition), [a.node_id])
    (settled,), replies = await rt.batcher.pipeline([calls.settle(rt, a)], reads)
    if settled.status == HOLDS_OTHER or (settled.status == SETTLED and settled.detail):
        return await offload(_settled, rt, a, settled, shaped(reads, replies))
    return _settled(rt, a, settled, shaped(reads, replies))


def _settled(
    rt: Runtime, a: Assignment, settled: Settled, reads: list[Any]
) -> tuple[lease_pb2.Lease, node_pb2.Node] | None:
    """What settle.lua said of a plain Match's claim, and the node read with it."""
    if settled.status == HOLDS_OTHER:
        return None if not settle(rt, [a]) else (a.lease(), _node(rt, a))
    if settled.status == SETTLED and settled.detail:
        # A copy of the job waits (a Match with wait, elsewhere): take it out of the channels
        # and wake it. Nobody else needs a wake-up, so a plain Match publishes nothing.
        unwait(rt, a.job_id, settled.detail, skip=a.partition)
        rt.client.execute_command(*wake_command(rt, a))
    rt.batcher.defer(command=("ZREM", rt.keys.partition(a.partition).outbox, a.lease_id))
    (node,) = nodes_from_replies(rt, [a.node_id], reads)
    return a.lease(), node or node_pb2.Node()


def _node(rt: Runtime, a: Assignment) -> node_pb2.Node:
    pk = rt.keys.partition(a.partition)

    def build(pipe: redis.client.Pipeline) -> None:
        queue_node_reads(pipe, pk, [a.node_id])
        pipe.zrem(pk.outbox, a.lease_id)

    replies = rt.scripts.pipeline(build)
    (node,) = nodes_from_replies(rt, [a.node_id], replies[:-1])
    return node or node_pb2.Node()


def partitions(rt: Runtime, job: JobSpec, *, fresh: bool, with_idle_only: bool) -> list[Partition]:
    """Partitions to try, in order: the caller's regions in its order of preference, or every
    region of the env, most idle capacity for the model first. With `with_idle_only`, those whose
    idle queue for the model is empty are left out (the script would find nothing there).
    Otherwise (the job may wait) a named region with no partition yet gets one, so the job waits
    for the first node that registers there."""
    candidates = _allowed(job, rt.catalogue.partitions(job.env, fresh=fresh))
    if job.regions and not with_idle_only:
        known = {p.region for p in candidates}
        missing = [Partition(job.env, r) for r in job.regions if r not in known]
        if missing:
            rt.client.sadd(rt.keys.partitions, *(p.label for p in missing))
            rt.catalogue.invalidate()
            order = {region: i for i, region in enumerate(job.regions)}
            candidates = sorted([*candidates, *missing], key=lambda p: (order[p.region], p.shard))
    if len(candidates) <= 1:
        # Nothing to order, and an empty idle queue costs the claim script no more than ZCARD.
        return candidates
    # Depths of a moment ago on the first pass (no round trip per Match); the second pass,
    # before giving up, reads them afresh.
    return _ordered(
        job, candidates, rt.catalogue.idle_depths(job.model, candidates, fresh=fresh), with_idle_only
    )


async def partitions_on_loop(rt: Runtime, job: JobSpec) -> list[Partition]:
    """`partitions(fresh=False, with_idle_only=True)` from the event loop: a catalogue or depth
    read that is due goes through the batcher."""
    candidates = _allowed(job, await rt.catalogue.partitions_on_loop(rt.batcher.pipeline, job.env))
    if len(candidates) <= 1:
        return candidates
    depth = await rt.catalogue.idle_depths_on_loop(rt.batcher.pipeline, job.model, candidates)
    return _ordered(job, candidates, depth, True)


def _allowed(job: JobSpec, known: list[Partition]) -> list[Partition]:
    """The known partitions the job may run in, in the caller's order of regions."""
    if not job.regions:
        return list(known)
    order = {region: i for i, region in enumerate(job.regions)}
    return sorted((p for p in known if p.region in order), key=lambda p: (order[p.region], p.shard))


def _ordered(
    job: JobSpec, candidates: list[Partition], depth: dict[Partition, int], with_idle_only: bool
) -> list[Partition]:
    if not job.regions:
        candidates = sorted(candidates, key=lambda p: -depth[p])
    return [p for p in candidates if depth[p] or not with_idle_only]


def try_partition(
    rt: Runtime, partition: Partition, job: JobSpec, excluded: set[str], *, scheduler: str, wait_ms: int
) -> Assignment | int | None:
    """Runs match.lua in one partition until it decides: the Assignment when it claimed a slot,
    the job's position when it left the job waiting there (wait_ms > 0), None when nothing fits."""
    pk = rt.keys.partition(partition)
    cursor = ""
    while True:
        matched = rt.scripts.call(_match(rt, pk, job, excluded, scheduler, wait_ms, cursor))
        if matched.code != calls.MORE:
            return _decided(job, matched, scheduler)
        cursor = matched.cursor


def _match(
    rt: Runtime,
    pk: PartitionKeys,
    job: JobSpec,
    excluded: set[str],
    scheduler: str,
    wait_ms: int,
    cursor: str,
) -> ScriptCall[calls.Matched]:
    return calls.match(
        rt,
        pk,
        job.job_id,
        model=job.model,
        min_vram_mb=job.min_vram_mb,
        gpu_models=job.gpu_models,
        subcloud=job.subcloud,
        labels=job.labels,
        excluded=excluded,
        lease_ttl_ms=job.lease_ttl_ms,
        policy=POLICY_NUMBERS[job.policy],
        cursor=cursor,
        seed=random.getrandbits(31),
        scheduler=scheduler,
        wait_ms=wait_ms,
        priority=job.priority,
        isolated=job.isolated,
        granted=job.granted,
    )


def _decided(job: JobSpec, matched: calls.Matched, scheduler: str) -> Assignment | int | None:
    """match.lua's decision: an Assignment, a waiting position, or None (nothing fits)."""
    if matched.code == calls.WAITING:
        return matched.position
    if matched.code == calls.OTHER_MODEL:
        raise FailedPrecondition(
            f"job {job.job_id!r} is waiting for model {matched.other_model}: cancel it or use a new job_id",
            reason="JOB_ID_CONFLICT",
        )
    if matched.code != calls.CLAIMED:
        return None
    return matched.assignment(job.job_id, scheduler)


async def match_on_loop(
    rt: Runtime, job: JobSpec, offload: Offload
) -> tuple[lease_pb2.Lease, node_pb2.Node] | None:
    """A plain Match in two round trips through the batcher, on the event loop: the claim in
    the best partition goes out together with the read of the nodes the job already failed on,
    and settling reads the node. The job's record is not read first: settle.lua decides against
    it (a live lease elsewhere wins and this claim is given back, see settle), so skipping
    prior() costs only a claim given back when a job is asked for again. None: nothing claimed
    in that partition, so the blocking Match decides the slow way (prior, place)."""
    candidates = await partitions_on_loop(rt, job)
    if not candidates:
        return None
    pk = rt.keys.partition(candidates[0])
    claim = _match(rt, pk, job, set(job.excluded), "", 0, "")
    (matched,), (tried,) = await rt.batcher.pipeline([claim], [("SMEMBERS", rt.keys.job_tried(job.job_id))])
    outcome = None if matched.code == calls.MORE else _decided(job, matched, "")
    if not isinstance(outcome, Assignment):
        return None
    if outcome.node_id in tried:
        # match.lua skips the nodes the job failed on in this partition; this one failed it in
        # another and moved here since. Give the slot back and choose without it.
        await offload(functools.partial(end_lease, rt, outcome.lease_id, outcome.token, failed=False))
        return None
    return await settle_own_on_loop(rt, outcome, offload) or await offload(_winner, rt, job.job_id)


def _winner(rt: Runtime, job_id: str) -> tuple[lease_pb2.Lease, node_pb2.Node] | None:
    """The live lease the job's record names (the claim that settled first), if any."""
    return live_lease(rt, job_id, text(rt.client.hget(rt.keys.job(job_id), "lease")))


def place(
    rt: Runtime, before: Prior, job: JobSpec, *, scheduler: str, wait_ms: int
) -> tuple[lease_pb2.Lease, node_pb2.Node] | int | None:
    """Claims a slot for the job in the first partition that has one (then its lease and node);
    with wait_ms > 0, leaves it waiting in every allowed partition that has none (then its best
    position); else None."""
    excluded = set(job.excluded) | before.tried
    waiting: list[Partition] = []
    positions: list[int] = []
    tried: set[Partition] = set()
    # The cached catalogue first; before giving up, a fresh one (a partition another server
    # created a moment ago).
    for fresh in (False, True):
        candidates = partitions(rt, job, fresh=fresh, with_idle_only=wait_ms == 0)
        if wait_ms and candidates:
            # Every partition it may wait in is on the record before it waits anywhere, so an
            # assignment in one partition can take it out of all the others.
            pipe = rt.client.pipeline(transaction=False)
            pipe.hset(
                rt.keys.job(job.job_id),
                mapping={"waiting": ",".join(p.label for p in candidates), "model": job.model},
            )
            pipe.pexpire(rt.keys.job(job.job_id), int(rt.config.job_ttl * 1000))
            pipe.execute()
        for partition in candidates:
            if partition in tried:
                continue
            tried.add(partition)
            outcome = try_partition(rt, partition, job, excluded, scheduler=scheduler, wait_ms=wait_ms)
            if isinstance(outcome, Assignment):
                if not outcome.scheduler_id:
                    answer = settle_own(rt, outcome)
                    if answer is not None:
                        return answer
                elif settle(rt, [outcome]):
                    return outcome.lease(), _node(rt, outcome)
                # A waiting copy of the job was assigned elsewhere first: that lease is the answer.
                won = _winner(rt, job.job_id)
                if won is not None:
                    return won
            elif outcome is not None:
                waiting.append(partition)
                positions.append(outcome)
    if waiting:
        return min(positions)
    return None
