"""What happens after a script hands a slot to a job: the job's global record learns its lease,
the job leaves the channels of other partitions, and its scheduler (or waiting Match) hears.

The script that claims the slot has already written everything a crash must not lose: the lease,
the job's lease in that partition, and an outbox entry (see claim in lua/lib/leases.lua). Settling is
derived from those and idempotent (settle.lua), so the caller does it at once, and if the caller
times out or dies first, the next sweep of any process settles what the outbox still holds.

A job waiting for any of several regions waits in each of their partitions, and two partitions
could each hand it a slot at the same moment (no script spans two partitions). The job record
decides: the first lease written to it wins, and a losing lease is released at once, its slot
going back to its node or to the next waiting job.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis

from livestate.server.store import calls
from livestate.server.store.calls import ENDED, ENDED_BEFORE, HOLDS_OTHER, SETTLED, Assignment, Ended, Settled
from livestate.server.store.keys import Partition, lease_partition
from livestate.server.store.notify import message
from livestate.server.store.runtime import Runtime
from livestate.server.store.scripts import Command, ScriptCall

log = logging.getLogger(__name__)
T = TypeVar("T")

# Bounds the chain "a losing lease is released, its slot goes to another job that also loses".
MAX_DEPTH = 4


def lease_is_live(rt: Runtime, lease_id: str) -> bool:
    """Whether the lease is in force (its record exists, has not ended, has not expired)."""
    try:
        pk = rt.keys.partition(lease_partition(lease_id))
    except ValueError:
        return False
    pipe = rt.client.pipeline(transaction=False)
    pipe.hmget(pk.lease(lease_id), ["exp", "done"])
    pipe.execute_command("TIME")  # not pipe.time(): the cluster pipeline refuses it
    (expire, done), (seconds, micros) = pipe.execute()
    return expire is not None and done is None and int(expire) > int(seconds) * 1000 + int(micros) // 1000


class Offload(Protocol):
    """Runs blocking fn(*args) on a worker thread, from the event loop (edge.LoopCall.offload)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


def end_lease(
    rt: Runtime, lease_id: str, token: int, *, failed: bool, reason: str = "", depth: int = 0
) -> Ended:
    """Runs release.lua (Release, Fail, or giving back a losing lease) and settles the waiting
    jobs the freed slot went to."""
    ended = rt.scripts.call(calls.release(rt, lease_id, token=token, failed=failed, reason=reason))
    copies = _copies(rt, lease_id, ended)
    if len(copies) > 1:
        # A scheduler's pending list is replayed to it: clear it before answering.
        rt.scripts.run_all(copies)
    elif copies:
        rt.batcher.defer(call=copies[0])
    if ended.handed:
        settle(rt, ended.handed, depth=depth + 1)
    return ended


async def end_lease_on_loop(
    rt: Runtime, lease_id: str, token: int, offload: Offload, *, failed: bool, reason: str = ""
) -> Ended:
    """`end_lease` from the event loop, through the batcher; settling the jobs the freed slot
    went to (more round trips) goes on a worker thread."""
    (ended,), _ = await rt.batcher.pipeline(
        [calls.release(rt, lease_id, token=token, failed=failed, reason=reason)], []
    )
    copies = _copies(rt, lease_id, ended)
    if len(copies) > 1:
        await rt.batcher.pipeline(copies, [])  # raises what either raised
    elif copies:
        rt.batcher.defer(call=copies[0])
    if ended.handed:
        await offload(functools.partial(settle, rt, ended.handed, depth=1))
    return ended


def _copies(rt: Runtime, lease_id: str, ended: Ended) -> list[ScriptCall[bool]]:
    """The global copies of an ended lease to clear, only where they still name it (a lease
    given back because its job holds another must not take the winner's entries with it): the
    job record's, then the scheduler's pending one. The job record's alone may wait for the next
    batch (Release in one round trip): a record still naming an ended lease is cleared by
    whoever reads it (jobs.prior, settle)."""
    if ended.code not in (ENDED, ENDED_BEFORE):
        return []
    copies = [calls.del_if_equal(rt.keys.job(ended.job_id), lease_id, "lease")]
    if ended.scheduler_id:
        copies.append(calls.del_if_equal(rt.keys.scheduler(ended.scheduler_id), lease_id, ended.job_id))
    return copies


def settle(
    rt: Runtime, assignments: Sequence[Assignment], *, drain: bool = False, depth: int = 0
) -> list[Assignment]:
    """Records the assignments on their jobs (one round trip for all), then tells the
    schedulers of those the jobs kept; returns those (the others were given back). With `drain`
    (assignments from an outbox sweep, which their caller may well have settled already) a
    scheduler is told only when the record was new, and the outbox entries are cleared."""
    if not assignments:
        return []
    won, told = [], []
    for a, settled in zip(assignments, _record(rt, assignments, wake=not drain), strict=True):
        if settled.status == HOLDS_OTHER and not lease_is_live(rt, settled.detail):
            # The record points at a lease that has ended: this one takes its place.
            rt.scripts.call(calls.del_if_equal(rt.keys.job(a.job_id), settled.detail, "lease"))
            (settled,) = _record(rt, [a], wake=not drain)
        if settled.status == HOLDS_OTHER:
            # The job holds another live lease (another partition was faster): give this one back.
            if depth < MAX_DEPTH:
                end_lease(rt, a.lease_id, a.token, failed=False, depth=depth)
            else:
                log.warning("duplicate assignment of %s left to expire: lease %s", a.job_id, a.lease_id)
            continue
        won.append(a)
        if settled.status == SETTLED or not drain:
            told.append(a)
        if settled.status == SETTLED and settled.detail:
            unwait(rt, a.job_id, settled.detail, skip=a.partition)
    _announce(rt, told, wake=drain)
    if drain:
        _clear_outbox(rt, assignments)
    return won


def _record(rt: Runtime, assignments: Sequence[Assignment], *, wake: bool) -> list[Settled]:
    """settle.lua for each assignment, in one pipeline. With `wake`, a waiting Match (no
    scheduler) is woken in the same round trip: a wake-up only, the waiter reads the job record,
    so waking it for a lease that then loses is harmless."""

    def build(pipe: redis.client.Pipeline) -> None:
        for a in assignments:
            record(rt, pipe, a, wake=wake)

    replies = rt.scripts.pipeline(build)
    settled = iter(r for r in replies if isinstance(r, list))  # the wake-ups' replies are integers
    return [calls.settle_reply(next(settled)) for _ in assignments]


def wake_command(rt: Runtime, a: Assignment) -> Command:
    """The wake-up of a Match waiting for the job (one of its own, not a scheduler's)."""
    return ("PUBLISH", rt.keys.assigned_channel, message(a.job_id, ""))


def record(rt: Runtime, pipe: redis.client.Pipeline, a: Assignment, *, wake: bool) -> int:
    """Queues settle.lua for one assignment (and, with `wake`, the wake-up of a waiting Match);
    returns how many replies it queued."""
    rt.scripts.add(pipe, calls.settle(rt, a))
    if wake and not a.scheduler_id:
        pipe.execute_command(*wake_command(rt, a))
        return 2
    return 1


def _announce(rt: Runtime, assignments: Sequence[Assignment], *, wake: bool) -> None:
    """Tells each assignment's scheduler (its record, replayed until taken up, and a wake-up);
    with `wake`, wakes waiting Matches too (when _record did not)."""
    pipe = rt.client.pipeline(transaction=False)
    for a in assignments:
        if a.scheduler_id:
            pipe.hset(rt.keys.scheduler(a.scheduler_id), a.job_id, a.lease_id)
            pipe.pexpire(rt.keys.scheduler(a.scheduler_id), int(rt.config.job_ttl * 1000))
        elif not wake:
            continue
        pipe.execute_command("PUBLISH", rt.keys.assigned_channel, message(a.job_id, a.scheduler_id))
    if len(pipe):
        pipe.execute()


def _clear_outbox(rt: Runtime, assignments: Sequence[Assignment]) -> None:
    by_partition: dict[Partition, list[str]] = collections.defaultdict(list)
    for a in assignments:
        by_partition[a.partition].append(a.lease_id)
    pipe = rt.client.pipeline(transaction=False)
    for partition, lease_ids in by_partition.items():
        pipe.zrem(rt.keys.partition(partition).outbox, *lease_ids)
    pipe.execute()


def unwait(rt: Runtime, job_id: str, waiting: str | None, skip: Partition | None = None) -> int:
    """Takes the job out of the channels of the partitions it waits in; returns how many held it."""
    labels = [label for label in (waiting or "").split(",") if label]
    partitions = [Partition.from_label(label) for label in labels]
    unwaits = [calls.unwait(rt, rt.keys.partition(p), job_id) for p in partitions if p != skip]
    return sum(rt.scripts.run_all(unwaits)) if unwaits else 0
