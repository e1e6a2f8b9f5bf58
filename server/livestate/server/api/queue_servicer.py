"""QueueService: fast queues. Jobs wait in per-(partition, model) channels, highest priority
first and oldest first within a priority; the script that frees a slot hands it to the head of
the channel in the same step (serve_waiting in lua/lib/waiting.lua).

Assignments for a scheduler are kept in its record until it takes them up (Renew, Release or
Fail of the lease), and replayed on every Assignments stream it opens, so a scheduler that was
away gets them when it returns. An assignment's lease lasts the job's whole ttl until then;
after that it lapses like any lease and the slot returns.

Threads: an Assignments stream holds one server thread per connected scheduler (not per job);
it sleeps on a wake-up from the assignment channel and re-reads its record at least every
POLL seconds.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import grpc

from livestate.server.api import auth
from livestate.server.core.clock import duration_ms, redis_now_ms
from livestate.server.core.errors import Aborted, FailedPrecondition, NotFound
from livestate.server.domain import jobs, validate
from livestate.server.domain.assignments import unwait
from livestate.server.domain.job_requests import job_spec
from livestate.server.store.notify import POLL, scheduler_topic
from livestate.server.store.runtime import Runtime
from livestate.v1 import queue_service_pb2 as pb
from livestate.v1 import queue_service_pb2_grpc as pb_grpc

PRIORITY_STRIDE = 2**41  # match.lua: score = -priority * 2^41 + enqueue ms
MAX_CHANNEL_READ = 10_000


class QueueLost(Aborted, reason="QUEUE_LOST"):
    """The live state was lost (a new epoch): every job that was waiting is gone."""

    def __init__(self, epoch: int) -> None:
        super().__init__(
            f"the live state was lost (now epoch {epoch}): jobs waiting before then are gone, enqueue "
            "them again",
            metadata={"epoch": str(epoch)},
        )


def _lost(known_epoch: int, current: int) -> bool:
    return bool(known_epoch) and known_epoch < current


class QueueServicer(pb_grpc.QueueServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def Enqueue(self, request: pb.EnqueueRequest, context: grpc.ServicerContext) -> pb.EnqueueResponse:
        rt = self.rt
        job = job_spec(rt, request)
        validate.identifier(request.scheduler_id, "scheduler_id")
        auth.require_scheduler(request.scheduler_id)
        ttl = validate.duration(request.ttl, "ttl", maximum=rt.config.max_queue_ttl) or rt.config.queue_ttl

        epoch = rt.epoch.current
        lost = _lost(request.known_epoch, epoch)
        before = jobs.prior(rt, job.job_id)
        if isinstance(before, tuple):  # already assigned: make sure its scheduler hears of it
            rt.client.hset(rt.keys.scheduler(request.scheduler_id), job.job_id, before[0].lease_id)
            rt.notifier.wake(job.job_id, request.scheduler_id)
            return pb.EnqueueResponse(position=0, epoch=epoch, queue_lost=lost)
        jobs.check_same_job(job, before.record)
        outcome = jobs.place(rt, before, job, scheduler=request.scheduler_id, wait_ms=int(ttl * 1000))
        if isinstance(outcome, tuple):
            return pb.EnqueueResponse(position=0, epoch=epoch, queue_lost=lost)
        if outcome is None:
            raise NotFound(
                f"no node has registered in env {job.env!r} yet: name the job's regions to wait for the "
                "first nodes there",
                reason="NO_PARTITION",
            )
        return pb.EnqueueResponse(position=outcome, epoch=epoch, queue_lost=lost)

    def Assignments(
        self, request: pb.AssignmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.AssignmentsResponse]:
        rt = self.rt
        validate.identifier(request.scheduler_id, "scheduler_id")
        auth.require_scheduler(request.scheduler_id)

        key = rt.keys.scheduler(request.scheduler_id)
        sent: set[tuple[str, str]] = set()
        # The epoch the scheduler's waiting jobs belong to: when the live state is lost, they are
        # gone with it, and the scheduler must hear so (not a silent stream) to enqueue them again.
        known = request.known_epoch or rt.epoch.current
        with rt.notifier.watch(scheduler_topic(request.scheduler_id)) as woken:
            while context.is_active():
                if _lost(known, rt.epoch.current):
                    raise QueueLost(rt.epoch.current)
                pending = {str(j): str(lease) for j, lease in rt.client.hgetall(key).items()}
                for job_id, lease_id in sorted(pending.items()):
                    if (job_id, lease_id) in sent:
                        continue
                    live = jobs.live_lease(rt, job_id, lease_id)
                    if live is None:  # lapsed before the scheduler took it up
                        rt.client.hdel(key, job_id)
                        continue
                    sent.add((job_id, lease_id))
                    yield pb.AssignmentsResponse(job_id=job_id, lease=live[0], node=live[1])
                woken.wait(POLL)
                woken.clear()

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        rt = self.rt
        validate.job_id(request.job_id)

        job = {str(k): str(v) for k, v in rt.client.hgetall(rt.keys.job(request.job_id)).items()}
        removed = unwait(rt, request.job_id, job.get("waiting"))
        pipe = rt.client.pipeline(transaction=False)
        pipe.hdel(rt.keys.job(request.job_id), "waiting")
        pipe.pexpire(rt.keys.job(request.job_id), int(rt.config.job_ttl * 1000))
        pipe.execute()
        if not removed:
            if jobs.live_lease(rt, request.job_id, job.get("lease")) is not None:
                raise FailedPrecondition(
                    "the job is already assigned: release its lease instead", reason="JOB_ASSIGNED"
                )
            raise NotFound(f"job {request.job_id!r} is not waiting", reason="JOB_NOT_WAITING")
        return pb.CancelResponse()

    def GetQueue(self, request: pb.GetQueueRequest, context: grpc.ServicerContext) -> pb.GetQueueResponse:
        validate.name(request.env, "env", required=True)
        validate.model(request.model, "model", required=True)

        epoch = self.rt.epoch.current
        (summary,) = self._summaries(request.env, [request.model])
        return pb.GetQueueResponse(
            epoch=epoch,
            queue_lost=_lost(request.known_epoch, epoch),
            env=summary.env,
            model=summary.model,
            idle_nodes=summary.idle_nodes,
            waiting_jobs=summary.waiting_jobs,
            depths=summary.depths,
            oldest_wait=summary.oldest_wait,
        )

    def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.ServicerContext
    ) -> pb.ListQueuesResponse:
        validate.name(request.env, "env", required=True)

        rt = self.rt
        parts = rt.catalogue.partitions(request.env, fresh=True)
        pipe = rt.client.pipeline(transaction=False)
        for p in parts:
            pipe.smembers(rt.keys.partition(p).models)
            pipe.smembers(rt.keys.partition(p).wait_models)
        models = sorted({str(m) for found in pipe.execute() for m in found})
        summaries = [s for s in self._summaries(request.env, models) if s.idle_nodes or s.waiting_jobs]
        return pb.ListQueuesResponse(queues=summaries)

    def _summaries(self, env: str, models: list[str]) -> list[pb.QueueSummary]:
        """Channel depths summed over the env's partitions; a job waiting in several partitions
        counts once."""
        rt = self.rt
        parts = rt.catalogue.partitions(env, fresh=True)
        pipe = rt.client.pipeline(transaction=False)
        pipe.execute_command("TIME")  # not pipe.time(): the cluster pipeline refuses it
        for model in models:
            for p in parts:
                pk = rt.keys.partition(p)
                pipe.zcard(pk.idle_queue(model))
                pipe.zrange(pk.wait_queue(model), 0, MAX_CHANNEL_READ - 1, withscores=True)
        now_reply, *replies = pipe.execute()
        now = redis_now_ms(now_reply)
        out = []
        for i, model in enumerate(models):
            chunk = replies[2 * i * len(parts) : 2 * (i + 1) * len(parts)]
            idle = sum(int(n) for n in chunk[0::2])
            jobs_seen: dict[str, float] = {}
            for entries in chunk[1::2]:
                for job_id, score in entries:
                    jobs_seen[str(job_id)] = min(float(score), jobs_seen.get(str(job_id), float("inf")))
            per_priority: collections.Counter[int] = collections.Counter()
            oldest = now
            for score in jobs_seen.values():
                enqueued = int(score) % PRIORITY_STRIDE
                per_priority[-(int(score) - enqueued) // PRIORITY_STRIDE] += 1
                oldest = min(oldest, enqueued)
            depths = [
                pb.PriorityDepth(priority=p, waiting_jobs=n)
                for p, n in sorted(per_priority.items(), reverse=True)
            ]
            out.append(
                pb.QueueSummary(
                    env=env,
                    model=model,
                    idle_nodes=idle,
                    waiting_jobs=len(jobs_seen),
                    depths=depths,
                    oldest_wait=duration_ms(now - oldest),
                )
            )
        return out
