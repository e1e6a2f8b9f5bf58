"""SubcloudService: Put, Get, List, Delete subcloud policies (see subclouds.py)."""

from __future__ import annotations

import grpc

from livestate.server import errors, validate
from livestate.server.errors import NotFound
from livestate.server.reads import redis_now_ms
from livestate.server.runtime import Runtime
from livestate.server.subclouds import from_json, to_json
from livestate.v1 import subcloud_service_pb2 as pb
from livestate.v1 import subcloud_service_pb2_grpc as pb_grpc


def _validate(subcloud: pb.Subcloud) -> None:
    validate.name(subcloud.name, "subcloud.name", required=True)
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

    @errors.unary
    def PutSubcloud(
        self, request: pb.PutSubcloudRequest, context: grpc.ServicerContext
    ) -> pb.PutSubcloudResponse:
        _validate(request.subcloud)

        rt = self.rt
        subcloud = pb.Subcloud()
        subcloud.CopyFrom(request.subcloud)
        subcloud.update_time.FromMilliseconds(redis_now_ms(rt.client.time()))
        rt.client.hset(rt.keys.subcloud_policies, subcloud.name, to_json(subcloud))
        rt.subclouds.invalidate()
        return pb.PutSubcloudResponse(subcloud=subcloud)

    @errors.unary
    def GetSubcloud(
        self, request: pb.GetSubcloudRequest, context: grpc.ServicerContext
    ) -> pb.GetSubcloudResponse:
        validate.name(request.name, "name", required=True)

        raw = self.rt.client.hget(self.rt.keys.subcloud_policies, request.name)
        if raw is None:
            raise NotFound(f"subcloud {request.name!r} has no policy", reason="SUBCLOUD_NOT_FOUND")
        return pb.GetSubcloudResponse(subcloud=from_json(str(raw)))

    @errors.unary
    def ListSubclouds(
        self, request: pb.ListSubcloudsRequest, context: grpc.ServicerContext
    ) -> pb.ListSubcloudsResponse:
        raw = self.rt.client.hgetall(self.rt.keys.subcloud_policies)
        subclouds = [from_json(str(raw[name])) for name in sorted(raw)]
        return pb.ListSubcloudsResponse(subclouds=subclouds)

    @errors.unary
    def DeleteSubcloud(
        self, request: pb.DeleteSubcloudRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSubcloudResponse:
        validate.name(request.name, "name", required=True)

        deleted = self.rt.client.hdel(self.rt.keys.subcloud_policies, request.name)
        self.rt.subclouds.invalidate()
        return pb.DeleteSubcloudResponse(deleted=bool(deleted))
