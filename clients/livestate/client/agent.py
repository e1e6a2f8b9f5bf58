"""NodeAgent: registers a node and keeps it beating, re-registering whenever the server asks.

    agent = NodeAgent("127.0.0.1:50051", spec)
    agent.register()
    agent.run(stop_event, read=lambda: Reading(state=NODE_STATE_IDLE, vram_free_mb=...))

`run` holds one Heartbeat stream open, sends a beat every interval the server names, answers
`resync_required` by registering again (same boot), and reconnects with backoff when the server
or its Redis is unavailable. When the server has no stream to spare (RESOURCE_EXHAUSTED), it
beats with unary Beat for the time the server suggests, then tries the stream again: the node
never goes silent for it. One agent object is one boot: a new process makes a new boot_id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc
from livestate.v1 import node_pb2

log = logging.getLogger(__name__)


def _retry_after(err: grpc.RpcError, default: float) -> float:
    """The server's `retry_after_ms` hint (ErrorInfo metadata), in seconds."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            with contextlib.suppress(KeyError, ValueError):
                return max(0.1, int(info.metadata["retry_after_ms"]) / 1000)
    return default


RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


@dataclasses.dataclass(frozen=True)
class Reading:
    """What the agent reports in a beat."""

    state: int = node_pb2.NODE_STATE_IDLE
    vram_free_mb: int = 0
    running_jobs: int = 0


class NodeAgent:
    def __init__(
        self,
        target: str | grpc.Channel,
        spec: node_pb2.NodeSpec,
        *,
        boot_id: str | None = None,
        call_timeout: float = 5.0,
    ) -> None:
        self.channel = grpc.insecure_channel(target) if isinstance(target, str) else target
        self._owns_channel = isinstance(target, str)
        self.stub = hb_grpc.HeartbeatServiceStub(self.channel)
        self.spec = spec
        self.boot_id = boot_id or uuid.uuid4().hex
        self.call_timeout = call_timeout
        self.interval = 2.0
        self.seq = 0
        self.registrations = 0
        self.stream_refusals = 0

    def register(self, reading: Reading | None = None) -> hb.RegisterResponse:
        reading = reading or Reading()
        response: hb.RegisterResponse = self.stub.Register(
            hb.RegisterRequest(
                node=self.spec,
                boot_id=self.boot_id,
                state=reading.state,  # type: ignore[arg-type]
                vram_free_mb=reading.vram_free_mb,
                # After the server lost its state, these keep the node from being handed more
                # jobs than it has slots while they finish.
                running_jobs=reading.running_jobs,
            ),
            timeout=self.call_timeout,
        )
        self.interval = response.heartbeat_interval.ToNanoseconds() / 1e9 or self.interval
        self.registrations += 1
        return response

    def beat(self, reading: Reading | None = None) -> hb.BeatResponse:
        """One unary beat; registers again (and beats once more) if the server lost the node."""
        reading = reading or Reading()
        response: hb.BeatResponse = self.stub.Beat(
            self._request(hb.BeatRequest, reading), timeout=self.call_timeout
        )
        if response.resync_required:
            self.register(reading)
            response = self.stub.Beat(self._request(hb.BeatRequest, reading), timeout=self.call_timeout)
        self._follow(response.next_interval.ToNanoseconds())
        return response

    def deregister(self) -> None:
        self.stub.Deregister(
            hb.DeregisterRequest(node_id=self.spec.node_id, boot_id=self.boot_id), timeout=self.call_timeout
        )

    def run(
        self, stop: threading.Event, read: Callable[[], Reading] = Reading, max_backoff: float = 10.0
    ) -> None:
        """Beats over a stream until `stop` is set; survives server and Redis outages."""
        backoff = 0.1
        while not stop.is_set():
            try:
                self.register(read())
                self._stream(stop, read)
                backoff = 0.1
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self._beat_unary_for(stop, read, _retry_after(err, default=max_backoff))
                    continue
                if err.code() not in RETRYABLE:
                    raise
                log.warning("livestate unavailable (%s); retrying in %.1fs", err.code(), backoff)
                stop.wait(backoff)
                backoff = min(max_backoff, backoff * 2)

    def _beat_unary_for(self, stop: threading.Event, read: Callable[[], Reading], seconds: float) -> None:
        """Unary beats every interval for `seconds` (the server had no stream for us)."""
        self.stream_refusals += 1
        log.info("no Heartbeat stream to spare; beating with unary Beat for %.0fs", seconds)
        until = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < until:
            try:
                self.beat(read())
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE:
                    raise
            stop.wait(self.interval)

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def _stream(self, stop: threading.Event, read: Callable[[], Reading]) -> None:
        """One stream; returns when the server asks for a resync (the caller registers again)."""
        outbox: queue.SimpleQueue[hb.HeartbeatRequest | None] = queue.SimpleQueue()

        def requests() -> Iterator[hb.HeartbeatRequest]:
            while (item := outbox.get()) is not None:
                yield item

        responses = self.stub.Heartbeat(requests())
        try:
            while not stop.is_set():
                outbox.put(self._request(hb.HeartbeatRequest, read()))
                response: hb.HeartbeatResponse | None = next(responses, None)
                if response is None or response.resync_required:  # stream ended, or node lost
                    return
                self._follow(response.next_interval.ToNanoseconds())
                stop.wait(self.interval)
        finally:
            outbox.put(None)
            responses.cancel()

    def _request(self, kind: type, reading: Reading):  # type: ignore[no-untyped-def]
        self.seq += 1
        return kind(
            node_id=self.spec.node_id,
            boot_id=self.boot_id,
            seq=self.seq,
            state=reading.state,
            vram_free_mb=reading.vram_free_mb,
            running_jobs=reading.running_jobs,
        )

    def _follow(self, next_interval_ns: int) -> None:
        if next_interval_ns > 0:
            self.interval = next_interval_ns / 1e9
