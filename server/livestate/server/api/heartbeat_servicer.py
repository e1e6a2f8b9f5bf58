"""HeartbeatService: Register, Heartbeat (stream), Beat (unary), Deregister."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import redis

from livestate.server.api import auth
from livestate.server.api.edge import StreamCall
from livestate.server.core.clock import duration
from livestate.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from livestate.server.domain import membership, validate
from livestate.server.domain.assignments import settle
from livestate.server.store import calls
from livestate.server.store.calls import (
    BEAT_RESYNC,
    BEAT_VRAM_ABOVE_TOTAL,
    DEREG_OTHER_BOOT,
    DEREG_UNKNOWN,
    Beaten,
)
from livestate.server.store.keys import Partition
from livestate.server.store.reads import nodes_from_replies, queue_node_reads
from livestate.server.store.records import GRANT_PREFIX, is_granted, joined, spec_fields
from livestate.server.store.runtime import Runtime
from livestate.server.store.scripts import ScriptCall
from livestate.v1 import flag_pb2, node_pb2
from livestate.v1 import heartbeat_service_pb2 as pb
from livestate.v1 import heartbeat_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

NODE_STATES = set(node_pb2.NodeState.values())

BeatLike = pb.BeatRequest | pb.HeartbeatRequest
RESYNC = Beaten(BEAT_RESYNC)


def validate_spec(spec: node_pb2.NodeSpec) -> None:
    validate.node_id(spec.node_id, "node.node_id")
    validate.name(spec.env, "node.env", required=True)
    validate.name(spec.region, "node.region", required=False)
    for i, model in enumerate(validate.distinct(spec.models, "node.models", max_items=validate.MAX_MODELS)):
        validate.model(model, f"node.models[{i}]", required=True)
    for i, sub in enumerate(
        validate.distinct(spec.subclouds, "node.subclouds", max_items=validate.MAX_SUBCLOUDS)
    ):
        validate.name(sub, f"node.subclouds[{i}]", required=True)
    validate.text(spec.gpu_model, "node.gpu_model", max_len=128)
    validate.at_most(spec.gpu_count, validate.MAX_GPUS, "node.gpu_count")
    validate.at_most(spec.vram_total_mb, validate.MAX_VRAM_MB, "node.vram_total_mb")
    validate.at_most(spec.slots, validate.MAX_SLOTS, "node.slots")
    validate.labels(spec.labels, "node.labels")
    validate.text(spec.agent_version, "node.agent_version", max_len=128)
    validate.text(spec.config_digest, "node.config_digest", max_len=128)


def _validate_beat(request: BeatLike) -> None:
    validate.node_id(request.node_id)
    validate.boot_id(request.boot_id)
    validate.enum_set(request.state, NODE_STATES, "state", required=True)
    validate.at_most(request.vram_free_mb, validate.MAX_VRAM_MB, "vram_free_mb")
    validate.at_most(request.running_jobs, validate.MAX_RUNNING_JOBS, "running_jobs")


class HeartbeatServicer(pb_grpc.HeartbeatServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._interval = duration(rt.config.heartbeat_interval)

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.RegisterResponse:
        spec = request.node
        validate_spec(spec)
        auth.require_node(spec.node_id)
        validate.boot_id(request.boot_id)
        validate.enum_set(request.state, NODE_STATES, "state", required=False)
        validate.at_most(request.vram_free_mb, spec.vram_total_mb or validate.MAX_VRAM_MB, "vram_free_mb")
        validate.at_most(request.running_jobs, validate.MAX_RUNNING_JOBS, "running_jobs")

        rt, node_id = self.rt, spec.node_id
        partition = Partition(spec.env, spec.region)
        pk = rt.keys.partition(partition)

        # The locator names the new partition before the pending flags are read: a SetFlag that
        # wrote its flag too late for this read finds the locator when it checks again, and puts
        # the flag into the partition itself (flag_servicer). Either way register.lua, or that
        # SetFlag before it returns, has the flag in force.
        # Grants are read after the locator is set too, for the same reason (membership.py).
        listed = list(spec.subclouds)

        def prepare(pipe: redis.client.Pipeline) -> None:
            pipe.set(rt.keys.locator(node_id), partition.label, px=rt.locator.ttl_ms, get=True)
            pipe.hgetall(rt.keys.pending_flags(node_id))
            # Catalogue the partition before the node lands in it: the sweeper visits listed ones.
            pipe.sadd(rt.keys.partitions, partition.label)
            rt.epoch.queue(pipe, partition)
            membership.queue_grant_reads(pipe, rt.keys, node_id, listed)

        previous_label, pending, new_partition, epoch_reply, part_reply, *grant_replies = rt.scripts.pipeline(
            prepare
        )
        grants = membership.grants_read(listed, grant_replies)
        if new_partition:
            rt.catalogue.invalidate()
        rt.epoch.observe_registration(partition, epoch_reply, part_reply)  # rt.context stamps it
        rt.locator.remember(node_id, partition)
        previous = Partition.from_label(str(previous_label)) if previous_label else None
        flags = {str(k): str(v) for k, v in pending.items()}
        if previous is not None and previous != partition:
            flags = self._leave(previous, node_id, flags)
        registration = calls.register(
            rt,
            pk,
            node_id,
            boot_id=request.boot_id,
            state=request.state or node_pb2.NODE_STATE_IDLE,
            vram_free_mb=request.vram_free_mb,
            models=joined(list(spec.models)),
            subclouds=joined(list(spec.subclouds)),
            running_jobs=request.running_jobs,
            flags=flags,
            grants=grants,
            spec_fields=spec_fields(spec),
        )

        def register(pipe: redis.client.Pipeline) -> None:
            rt.scripts.add(pipe, registration)
            queue_node_reads(pipe, pk, [node_id])

        reply, *reads = rt.scripts.pipeline(register)
        registered = registration.decode(reply)
        if flags:
            # In force in the partition now; a flag set meanwhile went there too (see above).
            rt.client.delete(rt.keys.pending_flags(node_id))

        settle(rt, registered.handed)
        must_grant = rt.subclouds.granted()
        refused = [s for s in listed if s in must_grant and not is_granted(grants.get(s))]
        membership.audit(rt, [(s, node_id, membership.REFUSED) for s in refused], auth.actor_of(context), "")
        (node,) = nodes_from_replies(rt, [node_id], reads)
        if node is not None:
            # Node-facing: a shadow-banned node must not learn of its ban from its own registration.
            visible = [f for f in node.flags if f.kind != flag_pb2.FLAG_KIND_SHADOW_BAN]
            del node.flags[:]
            node.flags.extend(visible)
        return pb.RegisterResponse(
            heartbeat_interval=self._interval,
            node=node,
            restarted=registered.restarted,
            suspect_after=duration(rt.config.suspect_after),
            offline_after=duration(rt.config.offline_after),
        )

    def _leave(self, previous: Partition, node_id: str, pending: dict[str, str]) -> dict[str, str]:
        """A node moving region leaves its old partition before it becomes matchable in the new
        one, so it is never matchable in two at once (its leases there end: LEASE_LOST 'moved').
        Its flags and failure score go with it, parked first with its pending flags, so a crash
        between leaving and arriving loses none: the next registration brings them in."""
        rt = self.rt
        old = rt.keys.partition(previous)
        # Memberships stay behind: the registration read them from their truth (membership.py).
        carried = {
            str(k): str(v)
            for k, v in rt.client.hgetall(old.control(node_id)).items()
            if not str(k).startswith(GRANT_PREFIX)
        }
        flags = {**carried, **pending}
        if carried:
            rt.client.hset(rt.keys.pending_flags(node_id), mapping={k: v for k, v in flags.items()})
        rt.scripts.call(calls.forget(rt, old, node_id))
        return flags

    def _reply(self, request: BeatLike, answer: Beaten) -> dict[str, Any]:
        """The fields BeatResponse and HeartbeatResponse share."""
        return {
            "resync_required": answer.code == BEAT_RESYNC,
            "next_interval": self._interval,
            "seq": request.seq,
            "paused": answer.paused,
            "notices": answer.notices,
        }

    def Beat(self, request: pb.BeatRequest, context: grpc.ServicerContext) -> pb.BeatResponse:
        return pb.BeatResponse(**self._reply(request, self._beat(request, context.time_remaining())))

    async def Heartbeat(self, call: StreamCall) -> None:  # type: ignore[override]
        """The agent's stream, served on the event loop (edge.py): one answer per beat, in order."""
        first: pb.HeartbeatRequest | None = None
        while (request := await call.read()) is not None:
            if first is None:
                first = request
            elif (request.node_id, request.boot_id) != (first.node_id, first.boot_id):
                raise InvalidArgument("node_id", "node_id and boot_id must not change within a stream")
            answer = await self._beat_on_loop(request, call)
            await call.write(pb.HeartbeatResponse(**self._reply(request, answer)))

    def Deregister(
        self, request: pb.DeregisterRequest, context: grpc.ServicerContext
    ) -> pb.DeregisterResponse:
        validate.node_id(request.node_id)
        validate.boot_id(request.boot_id)
        auth.require_node(request.node_id)

        rt = self.rt
        partition = rt.locator.lookup(request.node_id, use_cache=False)
        if partition is None:
            raise NotFound(f"node {request.node_id!r} is not registered")
        retention_ms = int((rt.config.retention + rt.config.forget_margin) * 1000)
        code = rt.scripts.call(
            calls.deregister(
                rt,
                rt.keys.partition(partition),
                request.node_id,
                boot_id=request.boot_id,
                retention_ms=retention_ms,
            )
        )
        if code == DEREG_UNKNOWN:
            raise NotFound(f"node {request.node_id!r} is not registered")
        if code == DEREG_OTHER_BOOT:
            raise FailedPrecondition(
                f"boot_id {request.boot_id!r} is not the registered boot of the node", reason="BOOT_MISMATCH"
            )
        return pb.DeregisterResponse()

    async def _beat_on_loop(self, request: pb.HeartbeatRequest, call: StreamCall) -> Beaten:
        """`_beat` for a stream: the common beat (its node's partition cached, nothing handed to
        it, nothing to resync) only waits for its batch; the rest goes to the worker pool."""
        _validate_beat(request)
        auth.require_node(request.node_id)

        rt = self.rt
        partition = rt.locator.cached(request.node_id)
        if partition is None:
            return await call.offload(self._beat, request, call.time_remaining())
        beat, touch = self._beat_call(request, partition)
        answer = await rt.batcher.call_async(beat, touch_key=touch, touch_ttl_ms=rt.locator.ttl_ms)
        if answer.handed or answer.code in (BEAT_RESYNC, BEAT_VRAM_ABOVE_TOTAL):
            return await call.offload(self._after, request, partition, answer, call.time_remaining())
        return answer  # applied, or acknowledged as stale: nothing more to do

    def _beat(self, request: BeatLike, time_remaining: float | None) -> Beaten:
        """Applies one beat and says what to answer."""
        _validate_beat(request)
        auth.require_node(request.node_id)

        partition = self.rt.locator.lookup(request.node_id)
        if partition is None:
            return RESYNC
        answer = self._run_beat(request, partition, time_remaining)
        return self._after(request, partition, answer, time_remaining)

    def _after(
        self,
        request: BeatLike,
        partition: Partition,
        answer: Beaten,
        time_remaining: float | None,
    ) -> Beaten:
        """What follows beat.lua's answer: settling the jobs it handed the node, and a second
        look at the locator before telling the agent to resync."""
        rt = self.rt
        if answer.handed:  # the node turned IDLE and took waiting jobs
            settle(rt, answer.handed)
        if answer.code == BEAT_RESYNC:
            # The cached partition may be stale (the node re-registered in another region through
            # another server process): look once more before telling the agent to resync.
            fresh = rt.locator.lookup(request.node_id, use_cache=False)
            if fresh is not None and fresh != partition:
                answer = self._run_beat(request, fresh, time_remaining)
                if answer.handed:
                    settle(rt, answer.handed)
        if answer.code == BEAT_VRAM_ABOVE_TOTAL:
            raise InvalidArgument("vram_free_mb", "above the node's registered vram_total_mb")
        if answer.code == BEAT_RESYNC:
            rt.locator.forget(request.node_id)
            return RESYNC
        return answer

    def _beat_call(self, request: BeatLike, partition: Partition) -> tuple[ScriptCall[Beaten], str | None]:
        """beat.lua's call for `request` in `partition`, and the locator key to refresh with it
        (None when not due)."""
        rt = self.rt
        touch = rt.keys.locator(request.node_id) if rt.locator.touch_due(request.node_id) else None
        beat = calls.beat(
            rt,
            rt.keys.partition(partition),
            request.node_id,
            boot_id=request.boot_id,
            seq=request.seq,
            state=request.state,
            vram_free_mb=request.vram_free_mb,
            running_jobs=request.running_jobs,
            operator_paused=request.operator_paused,
        )
        return beat, touch

    def _run_beat(self, request: BeatLike, partition: Partition, time_remaining: float | None) -> Beaten:
        rt = self.rt
        beat, touch = self._beat_call(request, partition)
        return rt.batcher.call(
            beat, timeout=rt.redis_wait(time_remaining), touch_key=touch, touch_ttl_ms=rt.locator.ttl_ms
        )
