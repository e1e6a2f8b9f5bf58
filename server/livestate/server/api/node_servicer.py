"""NodeService: GetNode, ListNodes, CountNodes, and Watch (see watch.py)."""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from livestate.server.core.errors import InvalidArgument, NotFound
from livestate.server.domain import paging, validate
from livestate.server.domain.watch import watch
from livestate.server.store.reads import fetch_node, fetch_nodes
from livestate.server.store.runtime import Runtime
from livestate.v1 import node_pb2
from livestate.v1 import node_service_pb2 as pb
from livestate.v1 import node_service_pb2_grpc as pb_grpc

LIVENESS = set(node_pb2.Liveness.values())
EVENT_TYPES = set(node_pb2.NodeEventType.values())
NODE_STATES = set(node_pb2.NodeState.values())
# Ids read per ZRANGEBYLEX; and how many ids one ListNodes call may examine before it returns a
# short page with a token (so a selective filter over many nodes never makes one call unbounded).
CHUNK = 200
SCAN_BUDGET_PAGES = 4


class NodeServicer(pb_grpc.NodeServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def GetNode(self, request: pb.GetNodeRequest, context: grpc.ServicerContext) -> pb.GetNodeResponse:
        validate.node_id(request.node_id)

        partition = self.rt.locator.lookup(request.node_id, use_cache=False)
        node = fetch_node(self.rt, partition, request.node_id) if partition is not None else None
        if node is None:
            raise NotFound(f"node {request.node_id!r} not found")
        return pb.GetNodeResponse(node=node)

    def ListNodes(self, request: pb.ListNodesRequest, context: grpc.ServicerContext) -> pb.ListNodesResponse:
        validate.name(request.env, "env", required=False)
        validate.model(request.model, "model", required=False)
        validate.name(request.region, "region", required=False)
        validate.enum_set(request.liveness, LIVENESS, "liveness", required=False)
        validate.enum_set(request.state, NODE_STATES, "state", required=False)
        validate.name(request.subcloud, "subcloud", required=False)
        page_size = validate.page_size(request.page_size)
        digest = _filter_digest(request)
        start_label, after = _decode_token(request.page_token, digest)

        rt = self.rt
        todo = [
            p
            for p in rt.catalogue.partitions(request.env, request.region or None, fresh=True)
            if p.label >= start_label
        ]
        nodes: list[node_pb2.Node] = []
        budget = page_size * SCAN_BUDGET_PAGES
        for partition in todo:
            if partition.label != start_label:
                after = ""
            pk = rt.keys.partition(partition)
            if request.model:
                index = pk.model_index(request.model)
            elif request.subcloud:
                index = pk.subcloud_index(request.subcloud)
            else:
                index = pk.nodes
            while True:
                ids = [
                    str(i) for i in rt.client.zrangebylex(index, f"({after}" if after else "-", "+", 0, CHUNK)
                ]
                for node_id, node in zip(ids, fetch_nodes(rt, partition, ids), strict=True):
                    after = node_id
                    budget -= 1
                    if node is not None and _matches(node, request):
                        nodes.append(node)
                    if len(nodes) == page_size or budget <= 0:
                        token = _encode_token(partition.label, after, digest)
                        return pb.ListNodesResponse(nodes=nodes, next_page_token=token)
                if len(ids) < CHUNK:
                    break
        return pb.ListNodesResponse(nodes=nodes)

    def CountNodes(
        self, request: pb.CountNodesRequest, context: grpc.ServicerContext
    ) -> pb.CountNodesResponse:
        validate.name(request.env, "env", required=True)
        validate.model(request.model, "model", required=False)
        validate.name(request.region, "region", required=False)

        rt = self.rt
        parts = rt.catalogue.partitions(request.env, request.region or None, fresh=True)
        if request.model:
            models: list[Iterable[str]] = [[request.model] for _ in parts]
        else:
            pipe = rt.client.pipeline(transaction=False)
            for p in parts:
                pipe.smembers(rt.keys.partition(p).models)
            models = [sorted(str(m) for m in found) for found in pipe.execute()]

        # Online = in the partition's alive set (kept current by the sweeper) and in the model index.
        pipe = rt.client.pipeline(transaction=False)
        pairs = []
        for p, names in zip(parts, models, strict=True):
            pk = rt.keys.partition(p)
            for model in names:
                pairs.append((model, p.region))
                pipe.zcard(pk.model_index(model))
                pipe.zintercard(2, [pk.alive, pk.model_index(model)])
        replies = pipe.execute()
        online: dict[tuple[str, str], int] = collections.defaultdict(int)
        for i, pair in enumerate(pairs):
            registered, alive = replies[2 * i], replies[2 * i + 1]
            if registered:
                online[pair] += int(alive)
        counts = [
            pb.ModelRegionCount(model=m, region=r, online_nodes=n) for (m, r), n in sorted(online.items())
        ]
        return pb.CountNodesResponse(counts=counts)

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchResponse]:
        validate.name(request.env, "env", required=False)
        validate.name(request.region, "region", required=False)
        for i, kind in enumerate(request.types):
            validate.enum_set(kind, EVENT_TYPES, f"types[{i}]", required=True)
        yield from watch(self.rt, request, context)


def _matches(node: node_pb2.Node, request: pb.ListNodesRequest) -> bool:
    if request.liveness and node.liveness != request.liveness:
        return False
    if request.state and node.state != request.state:
        return False
    if request.model and request.model not in node.spec.models:
        return False
    return not (request.subcloud and request.subcloud not in node.subclouds)


def _filter_digest(request: pb.ListNodesRequest) -> str:
    filters = [request.env, request.model, request.region, request.liveness, request.state, request.subcloud]
    return hashlib.sha1(json.dumps(filters).encode()).hexdigest()[:12]


def _encode_token(label: str, after: str, digest: str) -> str:
    return paging.encode({"p": label, "a": after, "f": digest})


def _decode_token(token: str, digest: str) -> tuple[str, str]:
    """(partition label to start at, node_id to resume after); ("", "") for the first page."""
    data = paging.decode(token, _is_position)
    if data is None:
        return "", ""
    if data["f"] != digest:
        raise InvalidArgument("page_token", "the filters changed since this token was issued")
    return data["p"], data["a"]


def _is_position(data: Any) -> bool:
    """What a ListNodes token holds: the partition, the node_id to resume after, and a digest of
    the filters (no signature: anyone can compute it, so every field is checked as written)."""
    return (
        isinstance(data, dict)
        and validate.is_partition_label(data.get("p"))
        and paging.after_node(data.get("a"))
        and isinstance(data.get("f"), str)
    )
