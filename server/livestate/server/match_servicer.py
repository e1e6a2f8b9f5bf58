"""MatchService: Match, Renew, Release, Fail.

Match claims a slot with one script per partition (match.lua); the job's own record (its live
lease, the nodes it failed on, its attempts) is global, since a job may run in any partition, and
a short claim key lets only one Match per job run at a time, so a retry racing its original gets
the original's lease instead of a second node.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterable

import grpc
import redis
from google.protobuf import timestamp_pb2

from livestate.server import errors, validate
from livestate.server.errors import Aborted, FailedPrecondition, InvalidArgument, LivestateError, NotFound
from livestate.server.keys import Partition, lease_id, lease_partition
from livestate.server.reads import nodes_from_replies, queue_node_reads
from livestate.server.runtime import Runtime
from livestate.v1 import lease_pb2
from livestate.v1 import match_service_pb2 as pb
from livestate.v1 import match_service_pb2_grpc as pb_grpc

POLICIES = {
    pb.SELECTION_POLICY_UNSPECIFIED: 1,
    pb.SELECTION_POLICY_LONGEST_IDLE: 1,
    pb.SELECTION_POLICY_RANDOM: 2,
    pb.SELECTION_POLICY_MOST_FREE_VRAM: 3,
}
# match.lua return codes
CLAIMED, NONE, MORE = 0, 1, 2
# renew.lua / release.lua return codes
LEASE_OK, LEASE_GONE, LEASE_STALE = 0, 1, 2
MAX_EXCLUDED = 1024
# How long a Match may hold its job's claim (it is released as soon as the Match ends).
CLAIM_MS = 10_000
# A Match that finds another in flight for its job waits this long for that one's answer.
AWAIT_OTHER = 2.0


class Unimplemented(LivestateError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def _lease_id(value: str) -> Partition:
    if not value:
        raise InvalidArgument("lease_id", "required")
    try:
        return lease_partition(value)
    except ValueError as exc:
        raise InvalidArgument("lease_id", "not a lease id this service issued") from exc


def _fencing_token(value: int) -> int:
    if value == 0:
        raise InvalidArgument("fencing_token", "required")
    return value


class MatchServicer(pb_grpc.MatchServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @errors.unary
    def Match(self, request: pb.MatchRequest, context: grpc.ServicerContext) -> pb.MatchResponse:
        cfg = self.rt.config
        validate.job_id(request.job_id)
        validate.name(request.env, "env", required=True)
        validate.model(request.model, "model", required=True)
        for i, region in enumerate(validate.distinct(request.regions, "regions", max_items=64)):
            validate.name(region, f"regions[{i}]", required=True)
        validate.at_most(request.min_vram_mb, validate.MAX_VRAM_MB, "min_vram_mb")
        for i, gpu in enumerate(validate.distinct(request.gpu_models, "gpu_models", max_items=64)):
            validate.text(gpu, f"gpu_models[{i}]", max_len=128)
        validate.name(request.subcloud, "subcloud", required=False)
        validate.labels(request.labels, "labels")
        for i, node_id in enumerate(
            validate.distinct(request.exclude_node_ids, "exclude_node_ids", max_items=MAX_EXCLUDED)
        ):
            validate.node_id(node_id, f"exclude_node_ids[{i}]")
        ttl = validate.duration(request.lease_ttl, "lease_ttl", maximum=cfg.max_lease_ttl) or cfg.lease_ttl
        wait = validate.duration(request.wait, "wait", maximum=cfg.max_lease_ttl)
        if request.policy not in POLICIES:
            raise InvalidArgument("policy", f"unknown value {request.policy}")
        if wait > 0:
            raise Unimplemented("Match with wait > 0 comes with the QueueService; send wait = 0")

        rt, job_id = self.rt, request.job_id
        give_up = time.monotonic() + min(AWAIT_OTHER, context.time_remaining() or AWAIT_OTHER)
        while True:
            claim = uuid.uuid4().hex
            pipe = rt.client.pipeline(transaction=False)
            pipe.hgetall(rt.keys.job(job_id))
            pipe.smembers(rt.keys.job_tried(job_id))
            pipe.set(rt.keys.job_claim(job_id), claim, nx=True, px=CLAIM_MS)
            job, tried, claimed = pipe.execute()
            live = self._live_lease(job_id, job.get("lease"))
            if live is not None:
                if claimed:
                    self._unclaim(job_id, claim)
                return live
            if claimed:
                break
            # Another Match for this job is in flight: its answer is ours (or, if it found
            # nothing, we try once its claim is gone).
            if time.monotonic() > give_up:
                raise Aborted("another Match for this job is still in flight", reason="JOB_BUSY")
            time.sleep(0.01)

        try:
            excluded = set(request.exclude_node_ids) | {str(n) for n in tried}
            claimed_lease = None
            tried_partitions: set[Partition] = set()
            # The cached catalogue first; before answering NOT_FOUND, a fresh one (a partition
            # another server created a moment ago).
            for fresh in (False, True):
                for partition in self._partitions(request.env, list(request.regions), request.model, fresh):
                    if partition in tried_partitions:
                        continue
                    tried_partitions.add(partition)
                    claimed_lease = self._claim(partition, request, excluded, int(ttl * 1000))
                    if claimed_lease is not None:
                        break
                if claimed_lease is not None:
                    break
            if claimed_lease is None:
                where = ", ".join(request.regions) or "any region"
                raise NotFound(
                    f"no eligible idle node for model {request.model!r} in env {request.env!r} ({where})",
                    reason="NO_ELIGIBLE_NODE",
                )
            partition, lease, node_id = claimed_lease
            pk = rt.keys.partition(partition)
            pipe = rt.client.pipeline(transaction=False)
            pipe.hset(rt.keys.job(job_id), mapping={"lease": lease.lease_id, "node": node_id})
            pipe.hincrby(rt.keys.job(job_id), "attempts", 1)
            pipe.pexpire(rt.keys.job(job_id), int(cfg.job_ttl * 1000))
            queue_node_reads(pipe, pk, [node_id])
            _, _, _, *reads = pipe.execute()
            (node,) = nodes_from_replies(rt, [node_id], reads)
            return pb.MatchResponse(lease=lease, node=node)
        finally:
            self._unclaim(job_id, claim)

    @errors.unary
    def Renew(self, request: pb.RenewRequest, context: grpc.ServicerContext) -> pb.RenewResponse:
        cfg = self.rt.config
        partition = _lease_id(request.lease_id)
        _fencing_token(request.fencing_token)
        ttl = validate.duration(request.lease_ttl, "lease_ttl", maximum=cfg.max_lease_ttl) or cfg.lease_ttl

        pk = self.rt.keys.partition(partition)
        code, expire_ms, job_id, node_id = self.rt.scripts.call(
            "renew",
            pk.renew_keys(),
            [*pk.bases(), request.lease_id, request.fencing_token, int(ttl * 1000), self._margin_ms()],
        )
        self._check(int(code), request.lease_id)
        lease = lease_pb2.Lease(
            lease_id=request.lease_id,
            job_id=job_id,
            node_id=node_id,
            fencing_token=request.fencing_token,
            expire_time=_timestamp(int(expire_ms)),
        )
        return pb.RenewResponse(lease=lease)

    @errors.unary
    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        partition = _lease_id(request.lease_id)
        _fencing_token(request.fencing_token)

        job_id, _, _, _ = self._end(
            partition, request.lease_id, request.fencing_token, failed=False, reason=""
        )
        self.rt.client.hdel(self.rt.keys.job(job_id), "lease", "node")
        return pb.ReleaseResponse()

    @errors.unary
    def Fail(self, request: pb.FailRequest, context: grpc.ServicerContext) -> pb.FailResponse:
        partition = _lease_id(request.lease_id)
        _fencing_token(request.fencing_token)
        validate.at_most(len(request.reason), 1024, "reason")

        rt = self.rt
        job_id, node_id, _, _ = self._end(
            partition, request.lease_id, request.fencing_token, failed=True, reason=request.reason
        )
        # The job never comes back to this node, whichever scheduler asks next.
        pipe = rt.client.pipeline(transaction=False)
        pipe.sadd(rt.keys.job_tried(job_id), node_id)
        pipe.pexpire(rt.keys.job_tried(job_id), int(rt.config.job_ttl * 1000))
        pipe.hdel(rt.keys.job(job_id), "lease", "node")
        pipe.hget(rt.keys.job(job_id), "attempts")
        *_, attempts = pipe.execute()
        return pb.FailResponse(attempts=int(attempts or 0))

    def _end(
        self, partition: Partition, lease: str, token: int, *, failed: bool, reason: str
    ) -> tuple[str, str, float, int]:
        rt, cfg = self.rt, self.rt.config
        pk = rt.keys.partition(partition)
        code, job_id, node_id, score, flag = rt.scripts.call(
            "release",
            pk.release_keys(),
            [
                *pk.bases(),
                lease,
                token,
                int(cfg.node_ttl * 1000),
                int(failed),
                int(cfg.failure_half_life * 1000),
                cfg.cooldown_score,
                int(cfg.cooldown_ttl * 1000),
                cfg.quarantine_score,
                int(cfg.quarantine_ttl * 1000),
                self._control_ttl_ms(),
                cfg.events_maxlen,
                reason,
            ],
        )
        self._check(int(code), lease)
        return str(job_id), str(node_id), float(score), int(flag)

    def _check(self, code: int, lease: str) -> None:
        if code == LEASE_GONE:
            raise NotFound(f"lease {lease!r} does not exist or has expired", reason="LEASE_NOT_FOUND")
        if code == LEASE_STALE:
            raise FailedPrecondition(
                "fencing_token is not the lease's current token", reason="STALE_FENCING_TOKEN"
            )

    def _live_lease(self, job_id: str, lease: str | None) -> pb.MatchResponse | None:
        """The job's lease while it lives (the idempotent answer), else None."""
        if not lease:
            return None
        rt = self.rt
        partition = lease_partition(lease)
        pk = rt.keys.partition(partition)
        pipe = rt.client.pipeline(transaction=False)
        pipe.hmget(pk.lease(lease), ["job", "node", "token", "exp"])
        pipe.time()
        (job, node_id, token, expire), (seconds, micros) = pipe.execute()
        if job != job_id or int(expire or 0) <= int(seconds) * 1000 + int(micros) // 1000:
            return None
        pipe = rt.client.pipeline(transaction=False)
        queue_node_reads(pipe, pk, [node_id])
        (node,) = nodes_from_replies(rt, [node_id], pipe.execute())
        lease_msg = lease_pb2.Lease(
            lease_id=lease,
            job_id=job_id,
            node_id=node_id,
            fencing_token=int(token),
            expire_time=_timestamp(int(expire)),
        )
        return pb.MatchResponse(lease=lease_msg, node=node)

    def _partitions(self, env: str, regions: list[str], model: str, fresh: bool) -> Iterable[Partition]:
        """Partitions to try, in order: the caller's regions in its order of preference, or every
        region of the env, most idle capacity for the model first. Partitions with an empty idle
        queue for the model are skipped without running the script."""
        rt = self.rt
        known = rt.catalogue.partitions(env, fresh=fresh)
        if regions:
            order = {region: i for i, region in enumerate(regions)}
            candidates = sorted(
                (p for p in known if p.region in order), key=lambda p: (order[p.region], p.shard)
            )
        else:
            candidates = known
        if not candidates:
            return []
        pipe = rt.client.pipeline(transaction=False)
        for p in candidates:
            pipe.zcard(rt.keys.partition(p).idle_queue(model))
        depth = dict(zip(candidates, pipe.execute(), strict=True))
        if not regions:
            candidates = sorted(candidates, key=lambda p: -depth[p])
        return [p for p in candidates if depth[p]]

    def _claim(
        self, partition: Partition, request: pb.MatchRequest, excluded: set[str], ttl_ms: int
    ) -> tuple[Partition, lease_pb2.Lease, str] | None:
        rt, cfg = self.rt, self.rt.config
        pk = rt.keys.partition(partition)
        new_lease = lease_id(partition, uuid.uuid4().hex)
        labels = "\n".join(f"{k}={v}" for k, v in sorted(request.labels.items()))
        cursor = ""
        while True:
            result = rt.scripts.call(
                "match",
                pk.match_keys(),
                [
                    *pk.bases(),
                    request.job_id,
                    request.model,
                    request.min_vram_mb,
                    ",".join(request.gpu_models),
                    request.subcloud,
                    labels,
                    ",".join(sorted(excluded)),
                    ttl_ms,
                    POLICIES[request.policy],
                    int(cfg.suspect_after * 1000),
                    rt.epoch.current,
                    int(cfg.sweep_gap * 1000),
                    cfg.match_walk,
                    cursor,
                    new_lease,
                    self._margin_ms(),
                    random.getrandbits(31),
                    int(cfg.node_ttl * 1000),
                ],
            )
            code = int(result[0])
            if code == NONE:
                return None
            if code == MORE:
                cursor = str(result[1])
                continue
            _, lease, token, expire_ms, node_id = result
            lease_msg = lease_pb2.Lease(
                lease_id=str(lease),
                job_id=request.job_id,
                node_id=str(node_id),
                fencing_token=int(token),
                expire_time=_timestamp(int(expire_ms)),
            )
            return partition, lease_msg, str(node_id)

    def _unclaim(self, job_id: str, claim: str) -> None:
        with contextlib.suppress(redis.exceptions.RedisError):  # it expires by itself
            self.rt.scripts.call("del_if_equal", [self.rt.keys.job_claim(job_id)], [claim])

    def _margin_ms(self) -> int:
        return int(self.rt.config.forget_margin * 1000)

    def _control_ttl_ms(self) -> int:
        cfg = self.rt.config
        return int((max(cfg.quarantine_ttl, cfg.cooldown_ttl) + 10 * cfg.failure_half_life) * 1000)
