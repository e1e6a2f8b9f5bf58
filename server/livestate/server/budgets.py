"""Threads are budgets: long-lived calls can never take the threads unary RPCs need.

The server is a threaded gRPC server, and every open call holds a worker thread. Agent Heartbeat
streams and watchers (Watch, Assignments) each get a cap of their own, per process and (with
access control) per identity; the worker pool is sized to every cap plus `unary_workers`, so
Match, Renew, Release and Beat always find a thread however many streams are open. A stream past
its cap is refused at once with RESOURCE_EXHAUSTED (ErrorInfo reason STREAM_BUDGET or
IDENTITY_STREAMS, metadata `retry_after_ms`): an agent beats with unary Beat meanwhile (NodeAgent
does) and tries the stream again later. A Heartbeat stream that sends nothing for
`stream_idle_after` is closed (CANCELLED), so dead peers do not hold slots until TCP notices.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from livestate.server import auth
from livestate.server.config import Config
from livestate.server.errors import ResourceExhausted, to_status
from livestate.v1 import heartbeat_service_pb2, node_service_pb2, queue_service_pb2

# How long a refused caller should wait before trying a stream again.
RETRY_AFTER_MS = 30_000


def _method(module: Any, service: str, name: str) -> str:
    return f"/{module.DESCRIPTOR.services_by_name[service].full_name}/{name}"


HEARTBEAT = _method(heartbeat_service_pb2, "HeartbeatService", "Heartbeat")
WATCHERS = (
    _method(node_service_pb2, "NodeService", "Watch"),
    _method(queue_service_pb2, "QueueService", "Assignments"),
)


class Budget:
    """A count of open calls with a cap, per process and per identity."""

    def __init__(self, name: str, limit: int, per_identity: int) -> None:
        self.name = name
        self.limit = limit
        self.per_identity = per_identity
        self._lock = threading.Lock()
        self.open = 0
        self._by_identity: collections.Counter[str] = collections.Counter()

    def take(self, identity: str | None) -> None:
        with self._lock:
            if self.open >= self.limit:
                raise _refusal(
                    f"this process already holds {self.limit} {self.name}; beat with unary Beat (or try "
                    "another process) and open the stream again later",
                    "STREAM_BUDGET",
                    self.name,
                )
            if identity is not None and self._by_identity[identity] >= self.per_identity:
                raise _refusal(
                    f"{identity!r} already holds {self.per_identity} {self.name} here",
                    "IDENTITY_STREAMS",
                    self.name,
                )
            self.open += 1
            if identity is not None:
                self._by_identity[identity] += 1

    def give(self, identity: str | None) -> None:
        with self._lock:
            self.open -= 1
            if identity is not None:
                self._by_identity[identity] -= 1
                if not self._by_identity[identity]:
                    del self._by_identity[identity]


def _refusal(message: str, reason: str, budget: str) -> ResourceExhausted:
    return ResourceExhausted(
        message, reason=reason, metadata={"budget": budget, "retry_after_ms": str(RETRY_AFTER_MS)}
    )


@dataclasses.dataclass
class _Open:
    context: grpc.ServicerContext
    last: float


class IdleStreams:
    """Closes Heartbeat streams that have sent nothing for `idle_after` seconds."""

    def __init__(self, idle_after: float) -> None:
        self.idle_after = idle_after
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-streams", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def track(self, key: int, context: grpc.ServicerContext) -> None:
        with self._lock:
            self._open[key] = _Open(context, time.monotonic())

    def heard(self, key: int) -> None:
        with self._lock:
            entry = self._open.get(key)
            if entry is not None:
                entry.last = time.monotonic()

    def forget(self, key: int) -> None:
        with self._lock:
            self._open.pop(key, None)

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.idle_after / 4)):
            cutoff = time.monotonic() - self.idle_after
            with self._lock:
                idle = [key for key, entry in self._open.items() if entry.last < cutoff]
                contexts = [self._open.pop(key).context for key in idle]
            for context in contexts:
                context.cancel()


class StreamBudgets(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Admits long-lived calls within their budgets; see the module docstring."""

    def __init__(self, config: Config) -> None:
        per_identity = config.max_streams_per_identity
        self.streams = Budget("agent streams", config.max_streams, per_identity)
        self.watchers = Budget("watchers", config.max_watchers, per_identity)
        self.idle = IdleStreams(config.stream_idle_after)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        if details.method == HEARTBEAT:
            return handler._replace(stream_stream=self._heartbeat(handler.stream_stream))
        if details.method in WATCHERS:
            return handler._replace(unary_stream=self._watcher(handler.unary_stream))
        return handler

    def _heartbeat(self, inner: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        budget, idle = self.streams, self.idle

        def admitted(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            identity = auth.actor()
            _take(budget, identity, context)
            key = id(context)
            idle.track(key, context)

            def heard() -> Iterator[Any]:
                for request in requests:
                    idle.heard(key)
                    yield request

            try:
                yield from inner(heard(), context)
            finally:
                idle.forget(key)
                budget.give(identity)

        return admitted

    def _watcher(self, inner: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        budget = self.watchers

        def admitted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            identity = auth.actor()
            _take(budget, identity, context)
            try:
                yield from inner(request, context)
            finally:
                budget.give(identity)

        return admitted


def _take(budget: Budget, identity: str | None, context: grpc.ServicerContext) -> None:
    try:
        budget.take(identity)
    except ResourceExhausted as refused:
        context.abort_with_status(to_status(refused))
