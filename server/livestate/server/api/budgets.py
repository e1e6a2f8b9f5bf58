"""Budgets: long-lived calls can never take what unary RPCs need.

Agent Heartbeat streams run on the event loop and hold no thread (edge.py), but each holds
memory and a share of the loop: they get a cap (`max_streams`). Watchers (Watch, Assignments)
are blocking code stepped on the worker pool, so they get a cap of their own (`max_watchers`);
the pool is sized to it, to `max_waiting_matches` and to `unary_workers`, so Match, Renew,
Release and Beat always find a thread however many watchers are open. Caps hold per process and
(with access control) per identity. A call past its cap is refused at once with
RESOURCE_EXHAUSTED (ErrorInfo reason STREAM_BUDGET or IDENTITY_STREAMS, metadata
`retry_after_ms`): an agent beats with unary Beat meanwhile (NodeAgent does) and tries the
stream again later.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from livestate.server.api import auth
from livestate.server.core import metrics
from livestate.server.core.config import Config
from livestate.server.core.errors import ResourceExhausted, to_status
from livestate.v1 import node_service_pb2, queue_service_pb2

# How long a refused caller should wait before trying a stream again.
RETRY_AFTER_MS = 30_000


def _method(module: Any, service: str, name: str) -> str:
    return f"/{module.DESCRIPTOR.services_by_name[service].full_name}/{name}"


WATCHERS = (
    _method(node_service_pb2, "NodeService", "Watch"),
    _method(queue_service_pb2, "QueueService", "Assignments"),
)


class Budget:
    """A count of open calls with a cap, per process and per identity."""

    def __init__(self, name: str, limit: int, per_identity: int, kind: str) -> None:
        self.name = name
        self._open_gauge = metrics.STREAMS_OPEN.labels(kind)
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
            self._open_gauge.inc()
            if identity is not None:
                self._by_identity[identity] += 1

    def give(self, identity: str | None) -> None:
        with self._lock:
            self.open -= 1
            self._open_gauge.dec()
            if identity is not None:
                self._by_identity[identity] -= 1
                if not self._by_identity[identity]:
                    del self._by_identity[identity]


def _refusal(message: str, reason: str, budget: str) -> ResourceExhausted:
    return ResourceExhausted(
        message, reason=reason, metadata={"budget": budget, "retry_after_ms": str(RETRY_AFTER_MS)}
    )


class StreamBudgets(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Admits watchers within their budget; Heartbeat streams take `streams` themselves (they
    are served on the event loop: heartbeat_servicer.HeartbeatStreams)."""

    def __init__(self, config: Config) -> None:
        per_identity = config.max_streams_per_identity
        self.streams = Budget("agent streams", config.max_streams, per_identity, "agent")
        self.watchers = Budget("watchers", config.max_watchers, per_identity, "watcher")

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is not None and details.method in WATCHERS:
            return handler._replace(unary_stream=self._watcher(handler.unary_stream))
        return handler

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
