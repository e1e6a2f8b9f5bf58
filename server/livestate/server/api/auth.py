"""Access control: bearer tokens with roles, per-identity rate limits.

Roles (see README): `node` (HeartbeatService only, for the node its token is bound to),
`scheduler` (matching, queues, reads), `reader` (reads), `admin` (everything). Tokens are
configured as SHA-256 hashes, never in clear, and compared in constant time. Health checks and
reflection need no token.

    {"tokens": [{"name": "alice", "role": "admin", "sha256": "<hex>"},
                {"name": "sched-1", "role": "scheduler", "sha256": "<hex>"},
                {"name": "pool", "role": "scheduler", "scheduler_ids": ["sched-a", "sched-b"],
                 "sha256": "<hex>"},
                {"name": "gpu-1", "role": "node", "node_id": "gpu-1", "sha256": "<hex>",
                 "rate": 20, "burst": 40}]}

A scheduler token is bound to scheduler ids too, because an Assignments stream hands out leases
with their fencing tokens and Enqueue decides whose stream a job's lease goes to: one scheduler
must not read or redirect another's. The ids are `scheduler_id` (one) or `scheduler_ids` (a
list); a scheduler token without either is bound to its own `name`, so the safe reading is the
one that needs no configuration. Admin tokens may act for any scheduler.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from livestate.server.core.errors import LivestateError, PermissionDenied, ResourceExhausted, to_status
from livestate.server.domain.validate import ID_RE, text
from livestate.v1 import (
    flag_service_pb2,
    heartbeat_service_pb2,
    match_service_pb2,
    node_service_pb2,
    queue_service_pb2,
    subcloud_service_pb2,
)

ROLES = ("node", "scheduler", "reader", "admin")


class Unauthenticated(LivestateError, code=grpc.StatusCode.UNAUTHENTICATED):
    """No token, or one this server does not know."""


@dataclasses.dataclass
class Identity:
    name: str
    role: str
    sha256: str
    node_id: str = ""
    scheduler_ids: tuple[str, ...] = ()
    rate: float = 0.0  # requests per second; 0 = unlimited
    burst: float = 0.0
    _tokens: float = dataclasses.field(default=0.0, repr=False)
    _at: float = dataclasses.field(default=0.0, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def take(self) -> bool:
        """Token bucket: `rate` per second, up to `burst` at once."""
        if self.rate <= 0:
            return True
        with self._lock:
            now = time.monotonic()
            capacity = self.burst or self.rate
            self._tokens = (
                min(capacity, self._tokens + (now - self._at) * self.rate) if self._at else capacity
            )
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def schedulers(self) -> tuple[str, ...]:
        """The scheduler ids this identity may act for (an admin's are unrestricted)."""
        if self.role != "scheduler":
            return ()
        return self.scheduler_ids or (self.name,)


def _scheduler_binding(entry: dict[str, Any]) -> tuple[str, ...]:
    one, many = entry.get("scheduler_id"), entry.get("scheduler_ids")
    if one is None and many is None:
        return ()
    name = entry.get("name")
    if one is not None and many is not None:
        raise ValueError(f"token of {name!r}: give scheduler_id or scheduler_ids, not both")
    ids = [one] if one is not None else many
    # A binding that could never match (an id Enqueue would refuse) is a typo, not a lock-out.
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(i, str) and ID_RE.fullmatch(i) for i in ids)
    ):
        raise ValueError(
            f"token of {name!r}: scheduler_id(s) must be scheduler ids (1-128 characters from "
            "[A-Za-z0-9._-]); scheduler_ids a non-empty list of them"
        )
    return tuple(ids)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    def __init__(self, identities: list[Identity]) -> None:
        self.identities = identities

    @classmethod
    def parse(cls, text: str, source: str) -> TokenTable:
        try:
            entries = json.loads(text)["tokens"]
            identities = []
            for entry in entries:
                identity = Identity(
                    name=str(entry["name"]),
                    role=str(entry["role"]),
                    sha256=str(entry["sha256"]).lower(),
                    node_id=str(entry.get("node_id", "")),
                    scheduler_ids=_scheduler_binding(entry),
                    rate=float(entry.get("rate", 0)),
                    burst=float(entry.get("burst", 0)),
                )
                if identity.role not in ROLES:
                    raise ValueError(f"role {identity.role!r} is not one of {', '.join(ROLES)}")
                if identity.scheduler_ids and identity.role != "scheduler":
                    raise ValueError(f"token of {identity.name!r}: only a scheduler has a scheduler_id")
                if len(identity.sha256) != 64:
                    raise ValueError(f"token of {identity.name!r}: sha256 must be 64 hex digits")
                identities.append(identity)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc
        return cls(identities)

    @classmethod
    def load(cls, path: str | None, inline: str | None) -> TokenTable | None:
        if inline:
            return cls.parse(inline, "LIVESTATE_AUTH_TOKENS")
        if path:
            return cls.parse(Path(path).read_text(), path)
        return None

    def lookup(self, token: str) -> Identity | None:
        digest = hash_token(token)
        found = None
        for identity in self.identities:  # every entry compared, in constant time each
            if hmac.compare_digest(identity.sha256, digest):
                found = identity
        return found


current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("livestate_identity", default=None)

READ = {"reader", "scheduler", "admin"}
SCHED = {"scheduler", "admin"}
ADMIN = {"admin"}


def _methods() -> dict[str, set[str]]:
    def full(module: Any, service: str, *names: str) -> list[str]:
        svc = module.DESCRIPTOR.services_by_name[service]
        return [f"/{svc.full_name}/{m.name}" for m in svc.methods if not names or m.name in names]

    table: dict[str, set[str]] = {}
    for method in full(heartbeat_service_pb2, "HeartbeatService"):
        table[method] = {"node", "admin"}
    for method in full(match_service_pb2, "MatchService") + full(queue_service_pb2, "QueueService"):
        table[method] = SCHED
    for method in full(queue_service_pb2, "QueueService", "GetQueue", "ListQueues"):
        table[method] = READ
    for method in full(node_service_pb2, "NodeService"):
        table[method] = READ
    for method in full(flag_service_pb2, "FlagService"):
        table[method] = READ
    for method in full(flag_service_pb2, "FlagService", "SetFlag", "ClearFlag"):
        table[method] = ADMIN
    for method in full(subcloud_service_pb2, "SubcloudService"):
        table[method] = READ
    for method in full(
        subcloud_service_pb2,
        "SubcloudService",
        "PutSubcloud",
        "DeleteSubcloud",
        "AddSubcloudMembers",
        "RemoveSubcloudMembers",
    ):
        table[method] = ADMIN
    return table


METHOD_ROLES = _methods()


def require_node(node_id: str) -> None:
    """A node token may act only for the node it is bound to."""
    identity = current.get()
    if identity is not None and identity.role == "node" and identity.node_id != node_id:
        raise PermissionDenied(f"this token may act only for node {identity.node_id!r}", reason="WRONG_NODE")


def require_scheduler(scheduler_id: str) -> None:
    """A scheduler token may read and feed only the assignment streams it is bound to."""
    identity = current.get()
    if identity is None or identity.role == "admin":
        return
    if scheduler_id not in identity.schedulers():
        raise PermissionDenied(
            f"this token may not act for scheduler {scheduler_id!r}", reason="SCHEDULER_BINDING"
        )


def actor() -> str | None:
    identity = current.get()
    return identity.name if identity is not None else None


def actor_of(context: grpc.ServicerContext) -> str:
    """Who is calling: the token's name when access control is on; else the advisory
    `livestate-actor` header, else "anonymous"."""
    named = actor()
    if named:
        return named
    for key, value in context.invocation_metadata() or ():
        if key == "livestate-actor" and isinstance(value, str):
            return text(value[:128], "livestate-actor", max_len=128) or "anonymous"
    return "anonymous"


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, table: TokenTable) -> None:
        self.table = table

    def admit(self, method: str, metadata: Any) -> Identity | None:
        """The caller's identity for a call to `method`; raises what the call must answer
        (UNAUTHENTICATED, PERMISSION_DENIED, or RESOURCE_EXHAUSTED past the rate limit).
        None for a method outside access control (health, reflection, unknown methods)."""
        roles = METHOD_ROLES.get(method)
        if roles is None:
            return None
        header = str(dict(metadata or ()).get("authorization", ""))
        if not header.lower().startswith("bearer "):
            raise Unauthenticated("a bearer token is required (authorization: Bearer <token>)")
        identity = self.table.lookup(header[7:].strip())
        if identity is None:
            raise Unauthenticated("unknown token")
        if identity.role not in roles:
            raise PermissionDenied(f"role {identity.role!r} may not call {method}", reason="ROLE")
        if not identity.take():
            raise ResourceExhausted(f"rate limit of {identity.name!r} exceeded", reason="RATE_LIMITED")
        return identity

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None or details.method not in METHOD_ROLES:
            return handler
        field = next(
            f for f in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, f)
        )
        inner = getattr(handler, field)
        streaming_response = field in ("unary_stream", "stream_stream")

        # Admission happens when the call runs (the rate limit counts calls, not lookups).
        def check(context: grpc.ServicerContext) -> Identity | None:
            try:
                return self.admit(details.method, details.invocation_metadata)
            except LivestateError as error:
                context.abort_with_status(to_status(error))
                raise

        if streaming_response:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = current.set(check(context))
                try:
                    yield from inner(request, context)
                finally:
                    current.reset(token)

            return handler._replace(**{field: streamed})

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            token = current.set(check(context))
            try:
                return inner(request, context)
            finally:
                current.reset(token)

        return handler._replace(**{field: unary})
