"""A Jepsen-style history of client operations, and a checker for it.

Clients record each call as an invoke and a completion (monotonic seconds), and instantaneous
events (an assignment read off an Assignments stream, a notice). `check()` replays the history
and returns human-readable violations; an empty list is a pass.

A lease is *live* for its holder from the completion of the first call that handed it out (a
Match or an assignment) until the earliest of:
  - the invoke of a Release/Fail of it that answered OK;
  - the invoke of a Release/Fail whose outcome is unknown (UNAVAILABLE, DEADLINE_EXCEEDED, ...),
    unless another Release/Fail of it answered OK: it may have taken effect at any moment after
    it was sent, so counting the lease as ended there keeps every reported overlap certain;
  - the completion of any Renew/Release/Fail that answered NOT_FOUND (the holder learned it is
    lost);
  - its expiry: the latest expire_time the server answered for it (grant or Renew).
Redis losing its state does not end a lease: its holder still runs the job until it learns
otherwise (NOT_FOUND), and agents re-register reporting their running jobs, so the server must not
hand those slots out meanwhile. STATE_LOST notices (the test wiped Redis) are for the reader.

Checked: no node holds more live leases than its slots; no job is live on two leases at once;
fencing tokens grow with real time within a partition; every enqueued job ends exactly once
(assigned to one lease, cancelled, expired, or reported lost to its scheduler); no call ended
INTERNAL or UNKNOWN.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from livestate.v1 import lease_pb2

# Operation kinds.
MATCH = "match"
RENEW = "renew"
RELEASE = "release"
FAIL = "fail"
ENQUEUE = "enqueue"
CANCEL = "cancel"
REGISTER = "register"
BEAT = "beat"
ASSIGNMENT = "assignment"  # event: a lease read off a scheduler's Assignments stream
QUEUE_LOST = "queue_lost"  # notice: a scheduler was told its waiting jobs are lost
STATE_LOST = "state_lost"  # notice: the test wiped Redis (FLUSHALL, or kill -9 and empty restart)

OK = "ok"
# Outcomes after which the call certainly changed nothing (or, for NOT_FOUND on a lease call,
# certainly found the lease gone). Anything else that is not OK may or may not have happened.
DEFINITE = frozenset(
    {
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "ALREADY_EXISTS",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
    }
)
FORBIDDEN = frozenset({"INTERNAL", "UNKNOWN"})
MAX_REPORTS = 20  # per kind of violation; the rest are counted


@dataclasses.dataclass(frozen=True)
class LeaseRef:
    """A lease as a client saw it; `expire` is on the recorder's (monotonic) clock."""

    lease_id: str
    job_id: str
    node_id: str
    token: int
    expire: float

    @property
    def partition(self) -> str:
        return self.lease_id.rsplit("/", 1)[0]


@dataclasses.dataclass
class Op:
    index: int
    kind: str
    process: str
    invoke: float
    job_id: str = ""
    lease: LeaseRef | None = None  # the lease the request names (Renew, Release, Fail)
    deadline: float | None = None  # the call's timeout, seconds
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    complete: float | None = None
    outcome: str | None = None  # OK, a status code name, or None while pending
    result: LeaseRef | None = None  # the lease answered (Match, Renew, an assignment)

    @property
    def duration(self) -> float | None:
        return None if self.complete is None else self.complete - self.invoke

    @property
    def indeterminate(self) -> bool:
        return self.outcome != OK and self.outcome not in DEFINITE

    def __str__(self) -> str:
        what = self.lease.lease_id if self.lease else self.job_id
        got = f" -> {self.result.lease_id}@{self.result.node_id}#{self.result.token}" if self.result else ""
        done = "pending" if self.complete is None else f"{self.complete:.3f}"
        span = f"[{self.invoke:.3f}, {done}]"
        extra = f" {self.detail}" if self.detail else ""
        return f"#{self.index} {self.process} {self.kind}({what}) {span} {self.outcome}{got}{extra}"


class History:
    """Thread-safe recorder. Times default to `clock()`; pass `at=` to build histories by hand."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self.slots: dict[str, int] = {}  # node_id -> slots, filled in by whoever registers nodes

    def invoke(
        self,
        kind: str,
        process: str,
        *,
        job_id: str = "",
        lease: LeaseRef | None = None,
        deadline: float | None = None,
        at: float | None = None,
        **detail: Any,
    ) -> Op:
        with self._lock:
            op = Op(
                index=len(self._ops),
                kind=kind,
                process=process,
                invoke=self.clock() if at is None else at,
                job_id=job_id or (lease.job_id if lease else ""),
                lease=lease,
                deadline=deadline,
                detail=detail,
            )
            self._ops.append(op)
            return op

    def ok(self, op: Op, result: LeaseRef | None = None, *, at: float | None = None, **detail: Any) -> None:
        self._complete(op, OK, result, at)
        if detail:
            with self._lock:
                op.detail.update(detail)

    def error(self, op: Op, code: grpc.StatusCode | str, *, at: float | None = None) -> None:
        self._complete(op, code if isinstance(code, str) else code.name, None, at)

    def _complete(self, op: Op, outcome: str, result: LeaseRef | None, at: float | None) -> None:
        with self._lock:
            op.complete = self.clock() if at is None else at
            op.outcome = outcome
            op.result = result

    def event(
        self,
        kind: str,
        process: str,
        *,
        job_id: str = "",
        result: LeaseRef | None = None,
        at: float | None = None,
        **detail: Any,
    ) -> Op:
        """An instantaneous entry: an assignment received, a notice."""
        op = self.invoke(kind, process, job_id=job_id or (result.job_id if result else ""), at=at, **detail)
        self._complete(op, OK, result, op.invoke)
        return op

    def lease(self, lease: lease_pb2.Lease) -> LeaseRef:
        """A lease proto, its expire_time (wall clock: Redis's, on this host) moved to our clock."""
        wall_minus_clock = time.time() - self.clock()
        expire = lease.expire_time.seconds + lease.expire_time.nanos / 1e9 - wall_minus_clock
        return LeaseRef(lease.lease_id, lease.job_id, lease.node_id, lease.fencing_token, expire)

    def ops(self, *kinds: str) -> list[Op]:
        with self._lock:
            return [op for op in self._ops if not kinds or op.kind in kinds]

    def check(self, slots: Mapping[str, int] | None = None, *, default_slots: int = 1) -> list[str]:
        with self._lock:
            ops = [dataclasses.replace(op) for op in self._ops]
            node_slots = {**self.slots, **(slots or {})}
        return check(ops, node_slots, default_slots=default_slots)


# -- the checker -------------------------------------------------------------------------------


@dataclasses.dataclass
class Life:
    """One lease's life as its holders saw it."""

    ref: LeaseRef
    invoked: float  # the earliest invoke of a call that may have created it
    granted: float  # the first completion that handed it out
    end: float
    ended_by: str

    @property
    def live(self) -> bool:
        return self.end > self.granted


def check(ops: list[Op], slots: Mapping[str, int], *, default_slots: int = 1) -> list[str]:
    ops = sorted(ops, key=lambda op: (op.invoke, op.index))
    lives = lease_lives(ops)
    return [
        *_capped("forbidden status", _forbidden(ops)),
        *_capped("slots", _over_slots(lives, slots, default_slots)),
        *_capped("job on two leases", _job_overlaps(lives)),
        *_capped("fencing", _fencing(lives)),
        *_capped("queue", _queue_outcomes(ops, lives)),
    ]


def _capped(what: str, found: Iterable[str]) -> list[str]:
    found = list(found)
    if len(found) <= MAX_REPORTS:
        return found
    return [*found[:MAX_REPORTS], f"... and {len(found) - MAX_REPORTS} more {what} violations"]


def _forbidden(ops: list[Op]) -> Iterable[str]:
    for op in ops:
        if op.outcome in FORBIDDEN:
            yield f"{op.kind} answered {op.outcome}: {op}"


def lease_lives(ops: list[Op]) -> dict[str, Life]:
    grants: dict[str, list[Op]] = defaultdict(list)
    lease_calls: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind in (MATCH, ASSIGNMENT) and op.outcome == OK and op.result and op.complete is not None:
            grants[op.result.lease_id].append(op)
        elif op.kind in (RENEW, RELEASE, FAIL) and op.lease:
            lease_calls[op.lease.lease_id].append(op)
    creators = _creators(ops)

    lives: dict[str, Life] = {}
    for lease_id, handed in grants.items():
        first = min(handed, key=lambda op: op.complete or 0.0)
        assert first.result is not None and first.complete is not None
        ref = first.result
        calls = lease_calls.get(lease_id, [])
        expire = max(
            [op.result.expire for op in handed if op.result]
            + [op.result.expire for op in calls if op.kind == RENEW and op.outcome == OK and op.result]
        )
        ends: list[tuple[float, str]] = [(expire, "expiry")]
        enders = [op for op in calls if op.kind in (RELEASE, FAIL)]
        released = [op for op in enders if op.outcome == OK]
        for op in released or [op for op in enders if op.indeterminate]:
            ends.append((op.invoke, f"{op.kind} {op.outcome or 'pending'} (#{op.index})"))
        for op in calls:
            if op.outcome == "NOT_FOUND" and op.complete is not None:
                ends.append((op.complete, f"{op.kind} NOT_FOUND (#{op.index})"))
        invoked = min(
            [op.invoke for op in creators.get(ref.job_id, []) if _may_create(op, lease_id, first.complete)]
            + [first.complete]
        )
        end, why = min(ends)
        lives[lease_id] = Life(ref=ref, invoked=invoked, granted=first.complete, end=end, ended_by=why)
    return lives


def _creators(ops: list[Op]) -> dict[str, list[Op]]:
    found: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind in (MATCH, ENQUEUE):
            found[op.job_id].append(op)
    return found


def _may_create(op: Op, lease_id: str, granted: float) -> bool:
    """Could this Match/Enqueue have created the lease that was handed out at `granted`?"""
    if op.invoke >= granted:
        return False
    if op.complete is None or op.complete > granted:
        return True
    if op.outcome == OK:
        return op.kind == ENQUEUE or (op.result is not None and op.result.lease_id == lease_id)
    return op.indeterminate


def _over_slots(lives: dict[str, Life], slots: Mapping[str, int], default_slots: int) -> Iterable[str]:
    by_node: dict[str, list[Life]] = defaultdict(list)
    for life in lives.values():
        if life.live:
            by_node[life.ref.node_id].append(life)
    for node_id, node_lives in sorted(by_node.items()):
        limit = slots.get(node_id, default_slots)
        # Ends sort before starts at the same instant: touching is not overlapping.
        points = sorted(
            [(life.granted, 1, life) for life in node_lives] + [(life.end, 0, life) for life in node_lives],
            key=lambda p: (p[0], p[1]),
        )
        held: dict[str, Life] = {}
        reported = False
        for t, starts, life in points:
            if not starts:
                held.pop(life.ref.lease_id, None)
                reported = False
                continue
            held[life.ref.lease_id] = life
            if len(held) > limit and not reported:
                reported = True
                leases = ", ".join(_describe(other) for other in held.values())
                yield f"node {node_id} ({limit} slot(s)) held {len(held)} live leases at {t:.3f}: {leases}"


def _job_overlaps(lives: dict[str, Life]) -> Iterable[str]:
    by_job: dict[str, list[Life]] = defaultdict(list)
    for life in lives.values():
        if life.live:
            by_job[life.ref.job_id].append(life)
    for job_id, job_lives in sorted(by_job.items()):
        job_lives.sort(key=lambda life: life.granted)
        for i, later in enumerate(job_lives):
            for earlier in job_lives[:i]:
                if later.granted < earlier.end:
                    yield (
                        f"job {job_id} live on two leases at {later.granted:.3f}: "
                        f"{_describe(earlier)} and {_describe(later)}"
                    )


def _fencing(lives: dict[str, Life]) -> Iterable[str]:
    """Within a partition: if A was handed out before B was asked for, token(A) < token(B)."""
    by_partition: dict[str, list[Life]] = defaultdict(list)
    for life in lives.values():
        by_partition[life.ref.partition].append(life)
    for partition, part in sorted(by_partition.items()):
        by_granted = sorted(part, key=lambda life: life.granted)
        granted_times = [life.granted for life in by_granted]
        best: list[Life] = []  # best[i]: the highest token among by_granted[: i + 1]
        for life in by_granted:
            best.append(life if not best or life.ref.token > best[-1].ref.token else best[-1])
        for later in sorted(part, key=lambda life: life.invoked):
            n = bisect.bisect_left(granted_times, later.invoked)  # granted strictly before
            if n and best[n - 1].ref.token >= later.ref.token:
                earlier = best[n - 1]
                yield (
                    f"fencing in {partition}: {_describe(earlier)} was granted at {earlier.granted:.3f}, "
                    f"before {_describe(later)} was asked for at {later.invoked:.3f}, "
                    "yet its token is not smaller"
                )


def _describe(life: Life) -> str:
    ref = life.ref
    return (
        f"{ref.lease_id} (job {ref.job_id}, node {ref.node_id}, token {ref.token}, "
        f"live {life.granted:.3f}-{life.end:.3f}, ended by {life.ended_by})"
    )


def _queue_outcomes(ops: list[Op], lives: dict[str, Life]) -> Iterable[str]:
    """Every enqueued job ends exactly one way. A job's history splits into episodes at each
    Enqueue made after the previous episode ended (cancelled, lost, or its lease ended)."""
    end_of_history = max([op.complete or op.invoke for op in ops], default=0.0)
    jobs: dict[str, list[Op]] = defaultdict(list)
    losses: dict[str, list[float]] = defaultdict(list)
    for op in ops:
        if op.kind in (ENQUEUE, CANCEL, ASSIGNMENT):
            jobs[op.job_id].append(op)
        elif op.kind == QUEUE_LOST:
            losses[op.process].append(op.invoke)
    for job_id, job_ops in sorted(jobs.items()):
        enqueues = [op for op in job_ops if op.kind == ENQUEUE]
        if not enqueues:
            continue
        yield from _episodes(job_id, job_ops, losses[enqueues[0].process], lives, end_of_history)


@dataclasses.dataclass
class _Episode:
    start: float
    ttl: float | None
    enqueued: bool = False  # some Enqueue answered OK (else it may never have waited)
    leases: list[str] = dataclasses.field(default_factory=list)
    cancelled: bool = False
    lost: bool = False
    ended: float | None = None


def _episodes(
    job_id: str, job_ops: list[Op], losses: list[float], lives: dict[str, Life], end_of_history: float
) -> Iterable[str]:
    events = sorted(
        [(op.invoke if op.kind != CANCEL else op.complete or op.invoke, 1, op) for op in job_ops]
        + [(t, 0, None) for t in losses],
        key=lambda e: (e[0], e[1]),
    )
    episodes: list[_Episode] = []
    for t, _, op in events:
        cur = episodes[-1] if episodes else None
        if op is None:  # the scheduler was told its waiting jobs are lost
            if cur and not cur.leases and cur.ended is None:
                cur.lost, cur.ended = True, t
            continue
        if op.kind == ENQUEUE:
            if cur is None or _over(cur, t):
                ttl = op.detail.get("ttl")
                cur = _Episode(start=t, ttl=None if ttl is None else float(ttl))
                episodes.append(cur)
            cur.enqueued |= op.outcome == OK
        elif cur is None:
            continue  # a Cancel or an assignment of a job never enqueued here
        elif op.kind == CANCEL and op.outcome == OK:
            cur.cancelled = True
            cur.ended = cur.ended or t
        elif op.kind == ASSIGNMENT and op.result:
            lease_id = op.result.lease_id
            if lease_id not in cur.leases:
                cur.leases.append(lease_id)
            life = lives.get(lease_id)
            if life and len(cur.leases) == 1:
                cur.ended = life.end
    for ep in episodes:
        when = f"job {job_id} (enqueued at {ep.start:.3f})"
        if len(ep.leases) > 1:
            yield f"{when} assigned to {len(ep.leases)} different leases without a loss between: {ep.leases}"
        outcomes = [
            name
            for name, hit in (("assigned", ep.leases), ("cancelled", ep.cancelled), ("lost", ep.lost))
            if hit
        ]
        if len(outcomes) > 1:
            yield f"{when} ended more than one way: {' and '.join(outcomes)}"
        expired = ep.ttl is not None and end_of_history >= ep.start + ep.ttl
        if not outcomes and not expired and ep.enqueued:
            yield (
                f"{when} was never assigned, cancelled, expired nor reported lost "
                f"(history ends {end_of_history:.3f})"
            )


def _over(ep: _Episode, t: float) -> bool:
    """Had the episode ended by `t` (cancelled, lost, its lease ended, or its ttl passed unassigned)?"""
    if ep.ended is not None:
        return ep.ended <= t
    return not ep.leases and not ep.cancelled and ep.ttl is not None and ep.start + ep.ttl <= t
