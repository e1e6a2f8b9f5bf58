"""Budgets: streams hold no worker thread, streams and watchers past their caps are refused at
once, unary RPCs always find a thread, silent streams are closed, and an agent with no stream to
spare keeps beating."""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import ServerFactory
from harness import IDLE, ONLINE, Harness, error_reason, spec, wait_for
from livestate.client.agent import NodeAgent, Reading
from livestate.server.api.auth import hash_token
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import queue_service_pb2 as qpb


class OpenStream:
    """A Heartbeat stream that beats once and then holds its slot (or was refused)."""

    def __init__(
        self, ls: Harness, node_id: str, boot: str, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.boot = boot
        self.outbox: queue.SimpleQueue[hb.HeartbeatRequest | None] = queue.SimpleQueue()
        self.outbox.put(hb.HeartbeatRequest(node_id=node_id, boot_id=boot, seq=1, state=IDLE))
        self.call = hb_grpc.HeartbeatServiceStub(ls.channel).Heartbeat(self._requests(), metadata=metadata)

    def _requests(self) -> Iterator[hb.HeartbeatRequest]:
        while (item := self.outbox.get()) is not None:
            yield item

    def first(self) -> grpc.StatusCode:
        """OK once the first beat was answered, else the status the stream ended with."""
        try:
            next(self.call)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()


def _open(ls: Harness, count: int, prefix: str = "held") -> list[OpenStream]:
    streams = []
    for i in range(count):
        boot, _ = ls.register(f"{prefix}-{i}")
        stream = OpenStream(ls, f"{prefix}-{i}", boot)
        assert stream.first() == grpc.StatusCode.OK
        streams.append(stream)
    return streams


def test_open_streams_hold_no_worker_thread(make_server: ServerFactory) -> None:
    """Ten times more streams than worker threads, every one beating: unary calls are served
    all the while, and every stream keeps being answered."""
    ls = make_server(max_watchers=1, max_waiting_matches=1, unary_workers=2)
    assert ls.config.max_workers == 4
    held = _open(ls, 40)
    try:
        boot, _ = ls.register("worker")
        for seq in range(1, 6):
            assert not ls.beat("worker", boot, seq=seq).resync_required
            assert ls.get("worker").spec.node_id == "worker"
        ls.release(ls.match("job-1", exclude_node_ids=[f"held-{i}" for i in range(40)]).lease)
        for i, stream in enumerate(held):
            stream.outbox.put(
                hb.HeartbeatRequest(node_id=f"held-{i}", boot_id=stream.boot, seq=2, state=IDLE)
            )
        assert all(not next(stream.call).resync_required for stream in held)
    finally:
        for stream in held:
            stream.close()


def test_a_watcher_that_leaves_gives_its_slot_back(make_server: ServerFactory) -> None:
    """Watchers step on worker threads; one whose client cancels is closed there and its slot is
    free again for the next."""
    ls = make_server(max_watchers=2)
    first = ls.queue.Assignments(qpb.AssignmentsRequest(scheduler_id="s1"), timeout=30)
    second = ls.queue.Assignments(qpb.AssignmentsRequest(scheduler_id="s2"), timeout=30)
    wait_for(lambda: ls.server.budgets.watchers.open == 2)
    try:
        first.cancel()
        wait_for(lambda: ls.server.budgets.watchers.open == 1)
        third = ls.queue.Assignments(qpb.AssignmentsRequest(scheduler_id="s3"), timeout=30)
        wait_for(lambda: ls.server.budgets.watchers.open == 2)
        third.cancel()
    finally:
        second.cancel()
    wait_for(lambda: ls.server.budgets.watchers.open == 0)


def test_a_stream_past_the_budget_is_refused_with_a_retry_hint(make_server: ServerFactory) -> None:
    ls = make_server(max_streams=3)
    held = _open(ls, 3)
    try:
        boot, _ = ls.register("one-too-many")
        extra = OpenStream(ls, "one-too-many", boot)
        with pytest.raises(grpc.RpcError) as info:
            next(extra.call)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(info.value) == "STREAM_BUDGET"
        status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
        assert status is not None
        details = error_details_pb2.ErrorInfo()
        status.details[0].Unpack(details)
        assert int(details.metadata["retry_after_ms"]) > 0
        extra.close()
        held.pop().close()  # a slot frees: the next stream is admitted
        wait_for(lambda: OpenStream(ls, "one-too-many", boot).first() == grpc.StatusCode.OK)
    finally:
        for stream in held:
            stream.close()


def test_unary_calls_find_a_thread_while_every_stream_slot_is_taken(make_server: ServerFactory) -> None:
    ls = make_server(max_streams=24, max_watchers=4, max_waiting_matches=2, unary_workers=4)
    held = _open(ls, 24)
    watchers = [
        ls.queue.Assignments(qpb.AssignmentsRequest(scheduler_id=f"s{i}"), timeout=30) for i in range(4)
    ]
    try:
        boot, _ = ls.register("worker")

        def unary_round(i: int) -> None:
            ls.beat("worker", boot)
            assert ls.get("worker").spec.node_id == "worker"
            # Eight rounds at once share one worker node: NOT_FOUND is an answer too; what must
            # not happen is RESOURCE_EXHAUSTED or a hang.
            lease = ls.try_match(f"job-{i}", exclude_node_ids=[f"held-{j}" for j in range(24)])
            if lease is not None:
                got = ls.match(f"job-{i}").lease  # the job's lease, again (idempotent)
                ls.match_stub.Renew(
                    mpb.RenewRequest(lease_id=got.lease_id, fencing_token=got.fencing_token), timeout=5
                )
                ls.release(got)

        with futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(unary_round, range(40)))
        # And the watchers' budget is as full as the streams': one more is refused.
        extra = ls.queue.Assignments(qpb.AssignmentsRequest(scheduler_id="s-extra"), timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            next(extra)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for stream in held:
            stream.close()
        for call in watchers:
            call.cancel()


def test_a_stream_that_sends_nothing_is_closed_and_frees_its_slot(make_server: ServerFactory) -> None:
    ls = make_server(max_streams=1, stream_idle_after=0.5)
    (silent,) = _open(ls, 1)
    try:
        with pytest.raises(grpc.RpcError) as info:
            next(silent.call)  # no second beat is ever sent
        assert info.value.code() == grpc.StatusCode.CANCELLED
        boot, _ = ls.register("next")
        assert OpenStream(ls, "next", boot).first() == grpc.StatusCode.OK
    finally:
        silent.close()


def test_an_agent_with_no_stream_to_spare_keeps_beating(make_server: ServerFactory) -> None:
    ls = make_server(max_streams=1)
    (held,) = _open(ls, 1)
    agent = NodeAgent(f"127.0.0.1:{ls.port}", spec("fallback"))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop, Reading))
    thread.start()
    try:
        wait_for(lambda: agent.stream_refusals >= 1)
        first = ls.get("fallback").last_seen_time.ToMilliseconds()
        # Beating by unary Beat: it stays ONLINE and its last beat keeps moving.
        wait_for(lambda: ls.get("fallback").last_seen_time.ToMilliseconds() > first)
        assert ls.liveness("fallback") == ONLINE
    finally:
        stop.set()
        thread.join(timeout=10)
        agent.close()
        held.close()


def test_one_identity_cannot_take_every_stream(make_server: ServerFactory) -> None:
    tokens = json.dumps(
        {"tokens": [{"name": "fleet-a", "role": "node", "node_id": "gpu-1", "sha256": hash_token("tok-a")}]}
    )
    ls = make_server(auth_tokens=tokens, max_streams_per_identity=1)
    metadata = (("authorization", "Bearer tok-a"),)
    boot = uuid.uuid4().hex
    ls.heartbeat.Register(hb.RegisterRequest(node=spec("gpu-1"), boot_id=boot), metadata=metadata, timeout=5)
    first = OpenStream(ls, "gpu-1", boot, metadata)
    second = OpenStream(ls, "gpu-1", boot, metadata)
    try:
        assert first.first() == grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError) as info:
            next(second.call)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(info.value) == "IDENTITY_STREAMS"
    finally:
        first.close()
        second.close()
