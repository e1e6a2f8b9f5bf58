"""SubcloudService: Put, Get, List, Delete subcloud policies (see subclouds.py), and the members
of subclouds whose membership is granted (see membership.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from livestate.server.api import auth
from livestate.server.core.clock import redis_now_ms, timestamp
from livestate.server.core.errors import InvalidArgument, NotFound
from livestate.server.domain import membership, paging, validate
from livestate.server.store.runtime import Runtime
from livestate.server.store.subclouds import from_json, membership_of, to_json
from livestate.v1 import subcloud_service_pb2 as pb
from livestate.v1 import subcloud_service_pb2_grpc as pb_grpc

MEMBERSHIPS = set(pb.SubcloudMembership.values())
MAX_MEMBERS_PER_CALL = 1000
ACTIONS = {
    membership.GRANT: pb.MEMBERSHIP_ACTION_GRANT,
    membership.REVOKE: pb.MEMBERSHIP_ACTION_REVOKE,
    membership.REFUSED: pb.MEMBERSHIP_ACTION_REFUSED,
}


def _validate(subcloud: pb.Subcloud) -> None:
    validate.name(subcloud.name, "subcloud.name", required=True)
    validate.enum_set(subcloud.membership, MEMBERSHIPS, "subcloud.membership", required=False)
    for i, model in enumerate(
        validate.distinct(subcloud.allowed_models, "subcloud.allowed_models", max_items=256)
    ):
        validate.model(model, f"subcloud.allowed_models[{i}]", required=True)
    for i, region in enumerate(
        validate.distinct(subcloud.allowed_regions, "subcloud.allowed_regions", max_items=64)
    ):
        validate.name(region, f"subcloud.allowed_regions[{i}]", required=True)
    validate.at_most(subcloud.min_vram_mb, validate.MAX_VRAM_MB, "subcloud.min_vram_mb")
    gpus = validate.distinct(subcloud.allowed_gpu_models, "subcloud.allowed_gpu_models", max_items=64)
    for i, gpu in enumerate(gpus):
        validate.text(gpu, f"subcloud.allowed_gpu_models[{i}]", max_len=128)
    banned = validate.distinct(subcloud.banned_node_ids, "subcloud.banned_node_ids", max_items=10_000)
    for i, node_id in enumerate(banned):
        validate.node_id(node_id, f"subcloud.banned_node_ids[{i}]")


class SubcloudServicer(pb_grpc.SubcloudServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def PutSubcloud(
        self, request: pb.PutSubcloudRequest, context: grpc.ServicerContext
    ) -> pb.PutSubcloudResponse:
        _validate(request.subcloud)

        rt = self.rt
        subcloud = pb.Subcloud()
        subcloud.CopyFrom(request.subcloud)
        subcloud.update_time.FromMilliseconds(redis_now_ms(rt.client.time()))
        subcloud.membership = membership_of(subcloud)  # type: ignore[assignment]
        rt.client.hset(rt.keys.subcloud_policies, subcloud.name, to_json(subcloud))
        rt.subclouds.invalidate()
        return pb.PutSubcloudResponse(subcloud=subcloud)

    def GetSubcloud(
        self, request: pb.GetSubcloudRequest, context: grpc.ServicerContext
    ) -> pb.GetSubcloudResponse:
        validate.name(request.name, "name", required=True)

        raw = self.rt.client.hget(self.rt.keys.subcloud_policies, request.name)
        if raw is None:
            raise NotFound(f"subcloud {request.name!r} has no policy", reason="SUBCLOUD_NOT_FOUND")
        return pb.GetSubcloudResponse(subcloud=from_json(str(raw)))

    def ListSubclouds(
        self, request: pb.ListSubcloudsRequest, context: grpc.ServicerContext
    ) -> pb.ListSubcloudsResponse:
        raw = self.rt.client.hgetall(self.rt.keys.subcloud_policies)
        subclouds = [from_json(str(raw[name])) for name in sorted(raw)]
        return pb.ListSubcloudsResponse(subclouds=subclouds)

    def DeleteSubcloud(
        self, request: pb.DeleteSubcloudRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSubcloudResponse:
        validate.name(request.name, "name", required=True)

        deleted = self.rt.client.hdel(self.rt.keys.subcloud_policies, request.name)
        self.rt.subclouds.invalidate()
        return pb.DeleteSubcloudResponse(deleted=bool(deleted))

    def AddSubcloudMembers(
        self, request: pb.AddSubcloudMembersRequest, context: grpc.ServicerContext
    ) -> pb.AddSubcloudMembersResponse:
        node_ids = _validate_members(request.subcloud, request.node_ids, request.reason)
        self._require_policy(request.subcloud)

        done = membership.change(
            self.rt, request.subcloud, node_ids, membership.GRANT, auth.actor_of(context), request.reason
        )
        return pb.AddSubcloudMembersResponse(added=done.changed)

    def RemoveSubcloudMembers(
        self, request: pb.RemoveSubcloudMembersRequest, context: grpc.ServicerContext
    ) -> pb.RemoveSubcloudMembersResponse:
        # No policy needed: revoking is always allowed, and grants outlive a deleted policy.
        node_ids = _validate_members(request.subcloud, request.node_ids, request.reason)

        done = membership.change(
            self.rt, request.subcloud, node_ids, membership.REVOKE, auth.actor_of(context), request.reason
        )
        return pb.RemoveSubcloudMembersResponse(removed=done.changed)

    def ListSubcloudMembers(
        self, request: pb.ListSubcloudMembersRequest, context: grpc.ServicerContext
    ) -> pb.ListSubcloudMembersResponse:
        validate.name(request.subcloud, "subcloud", required=True)
        page_size = validate.page_size(request.page_size)
        after = paging.decode(request.page_token, paging.after_node) or ""

        # Grant records hold at most a few thousand nodes; one read, sorted here, keeps pages stable.
        raw = self.rt.client.hgetall(self.rt.keys.grants(request.subcloud))
        node_ids = sorted(str(n) for n in raw if str(n) != membership.VERSION_FIELD and str(n) > after)
        page = node_ids[:page_size]
        members = [_member(node_id, str(raw[node_id])) for node_id in page]
        more = len(node_ids) > page_size
        return pb.ListSubcloudMembersResponse(
            members=members, next_page_token=paging.encode(page[-1]) if more else ""
        )

    def ListMembershipChanges(
        self, request: pb.ListMembershipChangesRequest, context: grpc.ServicerContext
    ) -> pb.ListMembershipChangesResponse:
        validate.name(request.subcloud, "subcloud", required=False)
        if request.node_id:
            validate.node_id(request.node_id)
        page_size = validate.page_size(request.page_size)

        def keep(fields: dict[str, str]) -> bool:
            return (not request.subcloud or fields.get("sub") == request.subcloud) and (
                not request.node_id or fields.get("node") == request.node_id
            )

        page = paging.audit_page(
            self.rt.client, self.rt.keys.membership_audit, request.page_token, page_size, keep
        )
        changes = [_change(entry_id, fields) for entry_id, fields in page.entries]
        return pb.ListMembershipChangesResponse(changes=changes, next_page_token=page.next_page_token)

    def _require_policy(self, subcloud: str) -> None:
        if not self.rt.client.hexists(self.rt.keys.subcloud_policies, subcloud):
            raise NotFound(f"subcloud {subcloud!r} has no policy: put one first", reason="SUBCLOUD_NOT_FOUND")


def _validate_members(subcloud: str, node_ids: Sequence[str], reason: str) -> list[str]:
    validate.name(subcloud, "subcloud", required=True)
    ids = validate.distinct(node_ids, "node_ids", max_items=MAX_MEMBERS_PER_CALL)
    if not ids:
        raise InvalidArgument("node_ids", "required: at least one node id")
    for i, node_id in enumerate(ids):
        validate.node_id(node_id, f"node_ids[{i}]")
    validate.text(reason, "reason", max_len=128)
    return ids


def _member(node_id: str, raw: str) -> pb.SubcloudMember:
    entry = json.loads(raw)
    return pb.SubcloudMember(
        node_id=node_id,
        actor=str(entry.get("actor", "")),
        reason=str(entry.get("reason", "")),
        grant_time=timestamp(int(entry.get("ms", 0))),
    )


def _change(entry_id: str, fields: dict[str, str]) -> pb.MembershipChange:
    return pb.MembershipChange(
        change_id=entry_id,
        subcloud=fields.get("sub", ""),
        node_id=fields.get("node", ""),
        action=ACTIONS.get(fields.get("action", ""), pb.MEMBERSHIP_ACTION_UNSPECIFIED),
        actor=fields.get("actor", ""),
        reason=fields.get("reason", ""),
        change_time=timestamp(int(entry_id.split("-")[0])),
    )
