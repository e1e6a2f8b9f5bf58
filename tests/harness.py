"""Test helpers: a livestate server in-process on port 0, called through the generated stubs."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import grpc
import redis
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status

from livestate.server import Config, LivestateServer
from livestate.server.store.keys import Partition
from livestate.v1 import (
    flag_service_pb2_grpc,
    heartbeat_service_pb2,
    heartbeat_service_pb2_grpc,
    lease_pb2,
    match_service_pb2,
    match_service_pb2_grpc,
    node_pb2,
    node_service_pb2,
    node_service_pb2_grpc,
    queue_service_pb2_grpc,
    subcloud_service_pb2,
    subcloud_service_pb2_grpc,
)
from livestate.v1 import queue_service_pb2 as qpb

T = TypeVar("T")

# Short timings so liveness tests take seconds; the ratios match the defaults (3 and 5 beats).
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "suspect_after": 0.6,
    "offline_after": 1.0,
    "sweep_interval": 0.05,
    "retention": 2.0,
    "redis_timeout": 0.5,
    "max_streams": 64,
    "max_watchers": 32,
    "outbox_settle_after": 0.5,
}

IDLE = node_pb2.NODE_STATE_IDLE
BUSY = node_pb2.NODE_STATE_BUSY
ONLINE = node_pb2.LIVENESS_ONLINE
SUSPECT = node_pb2.LIVENESS_SUSPECT
OFFLINE = node_pb2.LIVENESS_OFFLINE


def wait_for(condition: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
    """Polls until `condition()` is truthy and returns it; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def spec(node_id: str, **fields: Any) -> node_pb2.NodeSpec:
    values: dict[str, Any] = {
        "env": "test",
        "region": "eu-west",
        "models": ["llama-3-8b"],
        "gpu_model": "NVIDIA L4",
        "gpu_count": 1,
        "vram_total_mb": 24_000,
    }
    values.update(fields)
    return node_pb2.NodeSpec(node_id=node_id, **values)


def _detail(err: grpc.RpcError, kind: type[T]) -> T | None:
    """The first detail of that message type in the call's rich status."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(kind.DESCRIPTOR):  # type: ignore[attr-defined]
            found = kind()
            detail.Unpack(found)
            return found
    return None


def error_field(err: grpc.RpcError) -> str | None:
    """The field an INVALID_ARGUMENT names in its BadRequest detail."""
    bad = _detail(err, error_details_pb2.BadRequest)
    return None if bad is None else str(bad.field_violations[0].field)


def error_reason(err: grpc.RpcError) -> str | None:
    info = _detail(err, error_details_pb2.ErrorInfo)
    return None if info is None else str(info.reason)


class Harness:
    def __init__(self, server: LivestateServer, redis_client: redis.Redis) -> None:
        self.server = server
        self.config: Config = server.config
        self.redis = redis_client
        self.port = server.port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.heartbeat = heartbeat_service_pb2_grpc.HeartbeatServiceStub(self.channel)
        self.nodes = node_service_pb2_grpc.NodeServiceStub(self.channel)
        self.match_stub = match_service_pb2_grpc.MatchServiceStub(self.channel)
        self.flags = flag_service_pb2_grpc.FlagServiceStub(self.channel)
        self.queue = queue_service_pb2_grpc.QueueServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.subclouds = subcloud_service_pb2_grpc.SubcloudServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def stop(self, *, close_redis: bool = True) -> None:
        """Closes the channel, stops the server at once and (unless the test shares it) closes
        the Redis client."""
        self.close()
        self.server.stop(grace=0)
        if close_redis:
            self.redis.close()

    def register(
        self, node_id: str, boot_id: str | None = None, **fields: Any
    ) -> tuple[str, heartbeat_service_pb2.RegisterResponse]:
        boot = boot_id or uuid.uuid4().hex
        response = self.heartbeat.Register(
            heartbeat_service_pb2.RegisterRequest(node=spec(node_id, **fields), boot_id=boot), timeout=5
        )
        return boot, response

    def beat(
        self, node_id: str, boot_id: str, seq: int = 0, state: node_pb2.NodeState = IDLE, **fields: Any
    ) -> heartbeat_service_pb2.BeatResponse:
        request = heartbeat_service_pb2.BeatRequest(
            node_id=node_id, boot_id=boot_id, seq=seq, state=state, **fields
        )
        response: heartbeat_service_pb2.BeatResponse = self.heartbeat.Beat(request, timeout=5)
        return response

    def match(self, job_id: str, model: str = "llama-3-8b", **fields: Any) -> match_service_pb2.MatchResponse:
        values: dict[str, Any] = {"env": "test"}
        values.update(fields)
        request = match_service_pb2.MatchRequest(job_id=job_id, model=model, **values)
        response: match_service_pb2.MatchResponse = self.match_stub.Match(request, timeout=10)
        return response

    def try_match(self, job_id: str, **fields: Any) -> str | None:
        """The matched node's id, or None on NOT_FOUND (for polling)."""
        try:
            return self.match(job_id, **fields).lease.node_id
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    def release(self, lease: lease_pb2.Lease) -> None:
        self.match_stub.Release(
            match_service_pb2.ReleaseRequest(lease_id=lease.lease_id, fencing_token=lease.fencing_token),
            timeout=5,
        )

    def fail(self, lease: lease_pb2.Lease, reason: str = "oom") -> match_service_pb2.FailResponse:
        response: match_service_pb2.FailResponse = self.match_stub.Fail(
            match_service_pb2.FailRequest(
                lease_id=lease.lease_id, fencing_token=lease.fencing_token, reason=reason
            ),
            timeout=5,
        )
        return response

    @contextlib.contextmanager
    def beating(self, boots: dict[str, str]) -> Iterator[None]:
        """Keeps the nodes ({node_id: boot_id}) alive with an IDLE beat every interval."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(self.config.heartbeat_interval / 2):
                for node_id, boot in boots.items():
                    self.beat(node_id, boot)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def put_subcloud(self, name: str, **policy: Any) -> subcloud_service_pb2.Subcloud:
        request = subcloud_service_pb2.PutSubcloudRequest(
            subcloud=subcloud_service_pb2.Subcloud(name=name, **policy)
        )
        stored: subcloud_service_pb2.Subcloud = self.subclouds.PutSubcloud(request, timeout=5).subcloud
        return stored

    def get(self, node_id: str) -> node_pb2.Node:
        node: node_pb2.Node = self.nodes.GetNode(
            node_service_pb2.GetNodeRequest(node_id=node_id), timeout=5
        ).node
        return node

    def liveness(self, node_id: str) -> int:
        return self.get(node_id).liveness

    def events(self, partition_label: str = "test/eu-west/0") -> list[dict[str, str]]:
        key = self.server.rt.keys.partition(Partition.from_label(partition_label)).events
        entries = cast(list[tuple[str, dict[str, str]]], self.redis.xrange(key))
        return [fields for _, fields in entries]


def enqueue(ls: Harness, job_id: str, **fields: Any) -> qpb.EnqueueResponse:
    values: dict[str, Any] = {"env": "test", "model": "llama-3-8b", "scheduler_id": "sched-a"}
    values.update(fields)
    response: qpb.EnqueueResponse = ls.queue.Enqueue(qpb.EnqueueRequest(job_id=job_id, **values), timeout=5)
    return response


class Stream:
    """An Assignments stream read on a thread into a queue; `error` is how it ended, if it did."""

    def __init__(self, ls: Harness, scheduler_id: str = "sched-a", known_epoch: int = 0) -> None:
        request = qpb.AssignmentsRequest(scheduler_id=scheduler_id, known_epoch=known_epoch)
        self.call = ls.queue.Assignments(request, timeout=30)
        self.got: queue.Queue[qpb.AssignmentsResponse] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.call:
                self.got.put(item)
        except grpc.RpcError as err:
            self.error = err

    def next(self, timeout: float = 3.0) -> qpb.AssignmentsResponse:
        return self.got.get(timeout=timeout)

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=5)
