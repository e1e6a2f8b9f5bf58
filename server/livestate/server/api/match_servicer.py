"""MatchService: Match, Renew, Release, Fail.

Match claims a slot with one script per partition (match.lua, through jobs.place); the job's
own record (its live lease, the nodes it failed on, its attempts) is global, since a job may run
in any partition. Match is idempotent by job_id: a retry, or a copy racing its original, gets the
original's lease (match.lua finds it in its partition, the job record across partitions). Match
with `wait` rides on the QueueService's channels: the job waits there until a freed slot is
handed to it.
"""

from __future__ import annotations

import threading
import time

import grpc

from livestate.server.api.edge import LoopCall
from livestate.server.core.clock import timestamp
from livestate.server.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    LivestateError,
    NotFound,
    ResourceExhausted,
)
from livestate.server.domain import flag_audit, jobs, validate
from livestate.server.domain.assignments import end_lease, end_lease_on_loop, unwait
from livestate.server.domain.job_requests import job_spec
from livestate.server.store import calls
from livestate.server.store.calls import ENDED, ENDED_BEFORE, NO_LEASE, STALE_TOKEN, Ended
from livestate.server.store.connection import text
from livestate.server.store.keys import lease_partition
from livestate.server.store.notify import POLL, job_topic
from livestate.server.store.runtime import Runtime
from livestate.v1 import lease_pb2
from livestate.v1 import match_service_pb2 as pb
from livestate.v1 import match_service_pb2_grpc as pb_grpc


class DeadlineExceeded(LivestateError, code=grpc.StatusCode.DEADLINE_EXCEEDED, reason="WAIT_EXPIRED"):
    """A waiting Match whose wait ran out with no node for it."""


def lease_ref(lease_id: str, token: int) -> None:
    """Checks the (lease_id, fencing_token) pair every lease call names."""
    if not lease_id:
        raise InvalidArgument("lease_id", "required")
    try:
        lease_partition(lease_id)
    except ValueError as exc:
        raise InvalidArgument("lease_id", "not a lease id this service issued") from exc
    if token == 0:
        raise InvalidArgument("fencing_token", "required")


def check_lease_code(code: int, lease_id: str) -> None:
    if code == NO_LEASE:
        raise NotFound(f"lease {lease_id!r} does not exist or has expired", reason="LEASE_NOT_FOUND")
    if code == STALE_TOKEN:
        raise FailedPrecondition(
            "fencing_token is not the lease's current token", reason="STALE_FENCING_TOKEN"
        )


def _released(ended: Ended, lease_id: str) -> pb.ReleaseResponse:
    if ended.code != ENDED_BEFORE:  # ended by this very call's first copy: done all the same
        check_lease_code(ended.code, lease_id)
    return pb.ReleaseResponse()


class MatchServicer(pb_grpc.MatchServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # Waiting Matches each hold a server thread; past this many, callers are told to use
        # QueueService.Enqueue + Assignments, which holds one thread per scheduler instead.
        self._waiting = threading.BoundedSemaphore(rt.config.max_waiting_matches)

    async def match_on_loop(self, request: pb.MatchRequest, call: LoopCall) -> pb.MatchResponse | None:
        """A plain Match (no wait) on the event loop, its round trips through the batcher (see
        Edge.try_on_loop); None leaves the call to `Match`, on a worker thread."""
        rt = self.rt
        if request.subcloud and not rt.subclouds.knows(request.subcloud):
            return None  # its policy is looked up afresh, a blocking read: not on the loop
        job = job_spec(rt, request)
        if validate.duration(request.wait, "wait", maximum=rt.config.max_wait):
            return None
        answer = await jobs.match_on_loop(rt, job, call.offload)
        return None if answer is None else pb.MatchResponse(lease=answer[0], node=answer[1])

    def Match(self, request: pb.MatchRequest, context: grpc.ServicerContext) -> pb.MatchResponse:
        """What `match_on_loop` leaves: a waiting Match, or a plain one the slow way."""
        rt = self.rt
        job = job_spec(rt, request)
        wait = validate.duration(request.wait, "wait", maximum=rt.config.max_wait)

        if wait == 0:
            return self._place(job, context, wait_ms=0)
        if not self._waiting.acquire(blocking=False):
            raise ResourceExhausted(
                f"{rt.config.max_waiting_matches} Matches are already waiting in this process; "
                "use QueueService.Enqueue and Assignments to wait for many jobs",
                reason="TOO_MANY_WAITING",
            )
        try:
            remaining = context.time_remaining()
            # Stop waiting a little before the caller's own deadline, to leave the channel cleanly.
            until = time.monotonic() + min(wait, remaining - 0.05 if remaining is not None else wait)
            with rt.notifier.watch(job_topic(job.job_id)) as assigned:
                try:
                    return self._place(job, context, wait_ms=int(wait * 1000))
                except _Waiting:
                    pass
                # Not past the caller's leaving (nor the server's stopping): is_active says.
                while time.monotonic() < until and context.is_active():
                    assigned.wait(min(POLL, max(0.0, until - time.monotonic())))
                    assigned.clear()
                    live = self._lease_of(job.job_id)
                    if live is not None:
                        return live
            unwait(rt, job.job_id, text(rt.client.hget(rt.keys.job(job.job_id), "waiting")))
            rt.client.hdel(rt.keys.job(job.job_id), "waiting")
            live = self._lease_of(job.job_id)  # assigned while it was leaving
            if live is not None:
                return live
            raise DeadlineExceeded(f"no node became free for job {job.job_id!r} within wait")
        finally:
            self._waiting.release()

    def _place(self, job: jobs.JobSpec, context: grpc.ServicerContext, *, wait_ms: int) -> pb.MatchResponse:
        rt = self.rt
        before = jobs.prior(rt, job.job_id)
        if isinstance(before, tuple):
            return pb.MatchResponse(lease=before[0], node=before[1])
        if wait_ms:
            jobs.check_same_job(job, before.record)
        outcome = jobs.place(rt, before, job, scheduler="", wait_ms=wait_ms)
        if isinstance(outcome, tuple):
            return pb.MatchResponse(lease=outcome[0], node=outcome[1])
        if outcome is not None:
            raise _Waiting()
        where = ", ".join(job.regions) or "any region"
        raise NotFound(
            f"no eligible idle node for model {job.model!r} in env {job.env!r} ({where})",
            reason="NO_ELIGIBLE_NODE",
        )

    def _lease_of(self, job_id: str) -> pb.MatchResponse | None:
        lease_id = text(self.rt.client.hget(self.rt.keys.job(job_id), "lease"))
        live = jobs.live_lease(self.rt, job_id, lease_id)
        return None if live is None else pb.MatchResponse(lease=live[0], node=live[1])

    def Renew(self, request: pb.RenewRequest, context: grpc.ServicerContext) -> pb.RenewResponse:
        cfg = self.rt.config
        lease_ref(request.lease_id, request.fencing_token)
        ttl = validate.duration(request.lease_ttl, "lease_ttl", maximum=cfg.max_lease_ttl) or cfg.lease_ttl

        renewed = self.rt.scripts.call(
            calls.renew(self.rt, request.lease_id, token=request.fencing_token, ttl_ms=int(ttl * 1000))
        )
        check_lease_code(renewed.code, request.lease_id)
        if renewed.scheduler_id:  # the scheduler has its assignment: stop replaying it
            self.rt.client.hdel(self.rt.keys.scheduler(renewed.scheduler_id), renewed.job_id)
        lease = lease_pb2.Lease(
            lease_id=request.lease_id,
            job_id=renewed.job_id,
            node_id=renewed.node_id,
            fencing_token=request.fencing_token,
            expire_time=timestamp(renewed.expire_ms),
        )
        return pb.RenewResponse(lease=lease)

    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        lease_ref(request.lease_id, request.fencing_token)

        ended = end_lease(self.rt, request.lease_id, request.fencing_token, failed=False)
        return _released(ended, request.lease_id)

    async def release_on_loop(self, request: pb.ReleaseRequest, call: LoopCall) -> pb.ReleaseResponse:
        """Release on the event loop (see Edge.try_on_loop): one round trip through the batcher."""
        lease_ref(request.lease_id, request.fencing_token)

        ended = await end_lease_on_loop(
            self.rt, request.lease_id, request.fencing_token, call.offload, failed=False
        )
        return _released(ended, request.lease_id)

    def Fail(self, request: pb.FailRequest, context: grpc.ServicerContext) -> pb.FailResponse:
        lease_ref(request.lease_id, request.fencing_token)
        validate.at_most(len(request.reason), 1024, "reason")

        rt = self.rt
        ended = end_lease(rt, request.lease_id, request.fencing_token, failed=True, reason=request.reason)
        if ended.code != ENDED_BEFORE:  # a repeated Fail scores the node once
            check_lease_code(ended.code, request.lease_id)
        # The job never comes back to this node, whichever scheduler asks next. release.lua has
        # already recorded it in the node's partition (where the node can be matched), so this
        # global copy, which lets the job's record report it, may be lost without harm.
        job_key = rt.keys.job(ended.job_id)
        pipe = rt.client.pipeline(transaction=False)
        pipe.sadd(rt.keys.job_tried(ended.job_id), ended.node_id)
        pipe.pexpire(rt.keys.job_tried(ended.job_id), int(rt.config.job_ttl * 1000))
        pipe.hget(job_key, "attempts")
        *_, attempts = pipe.execute()
        # Failure scoring flagged the node: on the record like any admin's flag.
        if ended.code == ENDED and ended.flag:
            control = rt.keys.partition(lease_partition(request.lease_id)).control(ended.node_id)
            expire_ms = int(rt.client.hget(control, str(ended.flag)) or 0)
            flag_audit.append(
                rt,
                ended.node_id,
                ended.flag,
                "set",
                "livestate",
                "failure_score",
                f"failure score {ended.score:.2f} after: {request.reason}",
                expire_ms,
            )
        return pb.FailResponse(attempts=int(attempts or 0))


class _Waiting(Exception):
    """place() left the job waiting in its channels."""
