"""FlagService: SetFlag, ClearFlag, ListFlags, ListFlagChanges.

A registered node's flags live in its partition's control hash, the very hash the claim script
reads, so a Match that starts after SetFlag returns cannot pick the node. Flags on a node that is
not registered wait in a global record and move into its partition when it registers. Every
change is appended to a capped audit stream.
"""

from __future__ import annotations

import json

import grpc

from livestate.server.api import auth
from livestate.server.core.clock import redis_now_ms, timestamp
from livestate.server.core.errors import InvalidArgument, Unavailable
from livestate.server.domain import flag_audit, paging, validate
from livestate.server.store import calls
from livestate.server.store.keys import Partition
from livestate.server.store.reads import fetch_controls
from livestate.server.store.records import flags_from_control
from livestate.server.store.runtime import Runtime
from livestate.v1 import flag_pb2
from livestate.v1 import flag_service_pb2 as pb
from livestate.v1 import flag_service_pb2_grpc as pb_grpc

FLAG_KINDS = set(flag_pb2.FlagKind.values()) - {flag_pb2.FLAG_KIND_UNSPECIFIED}
MAX_FLAG_TTL = 366 * 86_400.0


def _message(value: str, field: str) -> str:
    if len(value) > 1024:
        raise InvalidArgument(field, "longer than 1024 characters")
    if any(ord(c) < 0x20 and c not in "\t" for c in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


class FlagServicer(pb_grpc.FlagServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def SetFlag(self, request: pb.SetFlagRequest, context: grpc.ServicerContext) -> pb.SetFlagResponse:
        validate.node_id(request.node_id)
        validate.enum_set(request.kind, FLAG_KINDS, "kind", required=True)
        ttl = validate.duration(request.ttl, "ttl", maximum=MAX_FLAG_TTL)
        if request.kind == flag_pb2.FLAG_KIND_COOLDOWN and ttl == 0:
            raise InvalidArgument("ttl", "a COOLDOWN needs a ttl")
        validate.text(request.reason, "reason", max_len=128)
        _message(request.message, "message")
        if request.HasField("start_time") and request.kind != flag_pb2.FLAG_KIND_MAINTENANCE:
            raise InvalidArgument("start_time", "only a MAINTENANCE flag has a window start")
        deadline = validate.duration(request.drain_deadline, "drain_deadline", maximum=MAX_FLAG_TTL)
        if deadline and request.kind != flag_pb2.FLAG_KIND_DRAIN:
            raise InvalidArgument("drain_deadline", "only a DRAIN flag has a deadline")

        actor = auth.actor_of(context)
        partition, now = self._locate(request.node_id)
        expire_ms = now + int(ttl * 1000) if ttl else 0
        start_ms = (
            validate.timestamp_ms(request.start_time, "start_time") if request.HasField("start_time") else 0
        )
        meta = json.dumps(
            {"reason": request.reason, "message": request.message, "actor": actor, "create_ms": now}
        )
        deadline_ms = now + int(deadline * 1000) if deadline else 0
        self._write(request.node_id, partition, request.kind, "set", expire_ms, start_ms, meta, deadline_ms)
        self._audit(request.node_id, request.kind, "set", actor, request.reason, request.message, expire_ms)

        flag = flag_pb2.Flag(
            node_id=request.node_id,
            kind=request.kind,
            reason=request.reason,
            message=request.message,
            actor=actor,
            create_time=timestamp(now),
        )
        if expire_ms:
            flag.expire_time.FromMilliseconds(expire_ms)
        if start_ms:
            flag.start_time.FromMilliseconds(start_ms)
        return pb.SetFlagResponse(flag=flag)

    def ClearFlag(self, request: pb.ClearFlagRequest, context: grpc.ServicerContext) -> pb.ClearFlagResponse:
        validate.node_id(request.node_id)
        validate.enum_set(request.kind, FLAG_KINDS, "kind", required=True)

        actor = auth.actor_of(context)
        partition, _ = self._locate(request.node_id)
        had = self._write(request.node_id, partition, request.kind, "clear", 0, 0, "{}")
        self._audit(request.node_id, request.kind, "clear", actor, "", "", 0)
        return pb.ClearFlagResponse(cleared=had)

    def ListFlags(self, request: pb.ListFlagsRequest, context: grpc.ServicerContext) -> pb.ListFlagsResponse:
        if request.node_id:
            validate.node_id(request.node_id)
        validate.enum_set(request.kind, FLAG_KINDS, "kind", required=False)
        page_size = validate.page_size(request.page_size)
        after = paging.decode(request.page_token, paging.after_node) or ""

        rt = self.rt
        if request.node_id:
            node_ids = [request.node_id]
        else:
            start = f"({after}" if after else "-"
            node_ids = [str(n) for n in rt.client.zrangebylex(rt.keys.flagged, start, "+", 0, page_size)]
        flags, last = [], ""
        for node_id, control, now in fetch_controls(self.rt, node_ids):
            last = node_id
            in_force = [
                f
                for f in flags_from_control(node_id, control, now)
                if not request.kind or f.kind == request.kind
            ]
            flags.extend(in_force)
            if not flags_from_control(node_id, control, now) and not request.node_id:
                rt.client.zrem(rt.keys.flagged, node_id)  # nothing left in force: off the index
        more = not request.node_id and len(node_ids) == page_size
        return pb.ListFlagsResponse(flags=flags, next_page_token=paging.encode(last) if more else "")

    def ListFlagChanges(
        self, request: pb.ListFlagChangesRequest, context: grpc.ServicerContext
    ) -> pb.ListFlagChangesResponse:
        if request.node_id:
            validate.node_id(request.node_id)
        page_size = validate.page_size(request.page_size)

        page = paging.audit_page(
            self.rt.client,
            self.rt.keys.flag_audit,
            request.page_token,
            page_size,
            lambda fields: not request.node_id or fields.get("node") == request.node_id,
        )
        changes = [_change(entry_id, fields) for entry_id, fields in page.entries]
        return pb.ListFlagChangesResponse(changes=changes, next_page_token=page.next_page_token)

    def _locate(self, node_id: str) -> tuple[Partition | None, int]:
        pipe = self.rt.client.pipeline(transaction=False)
        pipe.get(self.rt.keys.locator(node_id))
        pipe.execute_command("TIME")  # not pipe.time(): the cluster pipeline refuses it
        label, now_reply = pipe.execute()
        return (Partition.from_label(str(label)) if label else None), redis_now_ms(now_reply)

    def _write(
        self,
        node_id: str,
        partition: Partition | None,
        kind: int,
        action: str,
        expire_ms: int,
        start_ms: int,
        meta: str,
        deadline_ms: int = 0,
    ) -> bool:
        """Writes the change where the node is, then looks again: a node that registered (or
        moved) meanwhile may have read its flags before this write, so the write is repeated
        where the locator now points. Register sets the locator before it reads pending flags,
        so after this returns no registration can make the node matchable without the change."""
        rt = self.rt
        had = False
        fields = (str(kind), f"{kind}:meta", f"{kind}:from", f"{kind}:until")
        for _ in range(4):
            if partition is None:
                had = (
                    self._write_pending(node_id, kind, action, expire_ms, start_ms, meta, deadline_ms) or had
                )
            else:
                pk = rt.keys.partition(partition)
                flagged = calls.setflag(
                    rt,
                    pk,
                    node_id,
                    kind=kind,
                    action=action,
                    expire_ms=expire_ms,
                    start_ms=start_ms,
                    meta=meta,
                    deadline_ms=deadline_ms,
                )
                had = rt.scripts.call(flagged) or had
            # One round trip after the write: index the node, drop a pending copy the partition
            # now supersedes, and look where the node is now.
            pipe = rt.client.pipeline(transaction=False)
            pipe.zadd(rt.keys.flagged, {node_id: 0})
            if partition is not None:
                pipe.hdel(rt.keys.pending_flags(node_id), *fields)
            pipe.get(rt.keys.locator(node_id))
            _, *cleared, label = pipe.execute()
            had = had or bool(cleared and cleared[0] and action == "clear")
            now_at = Partition.from_label(str(label)) if label else None
            if now_at == partition or now_at is None:
                return had
            partition = now_at
        raise Unavailable("the node kept moving between partitions while its flag was written")

    def _write_pending(
        self, node_id: str, kind: int, action: str, expire_ms: int, start_ms: int, meta: str, deadline_ms: int
    ) -> bool:
        """Not registered: the flag waits for the node (Register brings it into the partition)."""
        key = self.rt.keys.pending_flags(node_id)
        pipe = self.rt.client.pipeline(transaction=False)
        pipe.hget(key, str(kind))
        if action == "set":
            pipe.hset(key, mapping={str(kind): expire_ms, f"{kind}:meta": meta})
            for field, value in ((f"{kind}:from", start_ms), (f"{kind}:until", deadline_ms)):
                if value:
                    pipe.hset(key, field, value)
                else:
                    pipe.hdel(key, field)
        else:
            pipe.hdel(key, str(kind), f"{kind}:meta", f"{kind}:from", f"{kind}:until")
        previous = pipe.execute()[0]
        return previous is not None

    def _audit(
        self, node_id: str, kind: int, action: str, actor: str, reason: str, message: str, expire_ms: int
    ) -> None:
        flag_audit.append(self.rt, node_id, kind, action, actor, reason, message, expire_ms)


def _change(entry_id: str, fields: dict[str, str]) -> pb.FlagChange:
    change = pb.FlagChange(
        change_id=entry_id,
        node_id=fields.get("node", ""),
        kind=int(fields.get("kind", "0")),  # type: ignore[arg-type]
        action=pb.FLAG_ACTION_SET if fields.get("action") == "set" else pb.FLAG_ACTION_CLEAR,
        actor=fields.get("actor", ""),
        reason=fields.get("reason", ""),
        message=fields.get("message", ""),
        change_time=timestamp(int(entry_id.split("-")[0])),
    )
    if int(fields.get("expire", "0")):
        change.expire_time.FromMilliseconds(int(fields["expire"]))
    return change
