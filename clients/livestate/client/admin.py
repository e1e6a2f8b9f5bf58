"""Admin: flags, subclouds, nodes and node events, for operators' tools and other services.

    admin = Admin("127.0.0.1:50051", metadata=[("authorization", "Bearer <admin token>")])
    admin.set_flag("gpu-7", flag_pb2.FLAG_KIND_PAUSE, ttl=3600, reason="thermal", message="cooling down")
    for node in admin.nodes(env="mainnet", liveness=node_pb2.LIVENESS_SUSPECT):
        ...
    for event in admin.watch(env="mainnet", stop=stop):   # resumes where it left off on reconnect
        ...

Listing calls page through every page; `watch` reconnects from the last event it yielded. Every
call has a deadline; the channel retries only on UNAVAILABLE (retries.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from livestate.client.retries import ChannelUser
from livestate.client.scheduler import duration
from livestate.client.streams import reconnect_or_raise, reopened
from livestate.v1 import flag_pb2, node_pb2
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import flag_service_pb2_grpc as fpb_grpc
from livestate.v1 import node_service_pb2 as npb
from livestate.v1 import node_service_pb2_grpc as npb_grpc
from livestate.v1 import subcloud_service_pb2 as spb
from livestate.v1 import subcloud_service_pb2_grpc as spb_grpc

log = logging.getLogger(__name__)

PAGE = 500


class Admin(ChannelUser):
    def __init__(
        self,
        target: str | grpc.Channel,
        *,
        call_timeout: float = 5.0,
        metadata: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(target, call_timeout, metadata)
        self.flag_stub = fpb_grpc.FlagServiceStub(self.channel)
        self.node_stub = npb_grpc.NodeServiceStub(self.channel)
        self.subcloud_stub = spb_grpc.SubcloudServiceStub(self.channel)

    # -- flags ---------------------------------------------------------------------------------

    def set_flag(
        self,
        node_id: str,
        kind: flag_pb2.FlagKind,
        *,
        ttl: float | None = None,
        reason: str = "",
        message: str = "",
        drain_deadline: float | None = None,
    ) -> flag_pb2.Flag:
        """Sets (or replaces) a flag; `ttl` None means until cleared. `message` is shown to the
        node for PAUSE and MAINTENANCE; SHADOW_BAN is never shown to it."""
        request = fpb.SetFlagRequest(
            node_id=node_id,
            kind=kind,
            ttl=duration(ttl),
            reason=reason,
            message=message,
            drain_deadline=duration(drain_deadline),
        )
        response: fpb.SetFlagResponse = self.flag_stub.SetFlag(request, **self._opts())
        return response.flag

    def clear_flag(self, node_id: str, kind: flag_pb2.FlagKind) -> bool:
        """True when a flag of that kind was in force."""
        response = self.flag_stub.ClearFlag(fpb.ClearFlagRequest(node_id=node_id, kind=kind), **self._opts())
        return bool(response.cleared)

    def flags(
        self, node_id: str = "", kind: flag_pb2.FlagKind = flag_pb2.FLAG_KIND_UNSPECIFIED
    ) -> Iterator[flag_pb2.Flag]:
        token = ""
        while True:
            request = fpb.ListFlagsRequest(node_id=node_id, kind=kind, page_size=PAGE, page_token=token)
            page: fpb.ListFlagsResponse = self.flag_stub.ListFlags(request, **self._opts())
            yield from page.flags
            token = page.next_page_token
            if not token:
                return

    def flag_changes(self, node_id: str = "") -> Iterator[fpb.FlagChange]:
        """The audit trail, newest first."""
        token = ""
        while True:
            request = fpb.ListFlagChangesRequest(node_id=node_id, page_size=PAGE, page_token=token)
            page: fpb.ListFlagChangesResponse = self.flag_stub.ListFlagChanges(request, **self._opts())
            yield from page.changes
            token = page.next_page_token
            if not token:
                return

    # -- subclouds -----------------------------------------------------------------------------

    def put_subcloud(self, subcloud: spb.Subcloud) -> spb.Subcloud:
        request = spb.PutSubcloudRequest(subcloud=subcloud)
        response: spb.PutSubcloudResponse = self.subcloud_stub.PutSubcloud(request, **self._opts())
        return response.subcloud

    def subcloud(self, name: str) -> spb.Subcloud | None:
        try:
            response = self.subcloud_stub.GetSubcloud(spb.GetSubcloudRequest(name=name), **self._opts())
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return response.subcloud  # type: ignore[no-any-return]

    def subclouds(self) -> list[spb.Subcloud]:
        response = self.subcloud_stub.ListSubclouds(spb.ListSubcloudsRequest(), **self._opts())
        return list(response.subclouds)

    def delete_subcloud(self, name: str) -> bool:
        request = spb.DeleteSubcloudRequest(name=name)
        return bool(self.subcloud_stub.DeleteSubcloud(request, **self._opts()).deleted)

    # -- nodes ---------------------------------------------------------------------------------

    def node(self, node_id: str) -> node_pb2.Node | None:
        try:
            response = self.node_stub.GetNode(npb.GetNodeRequest(node_id=node_id), **self._opts())
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return response.node  # type: ignore[no-any-return]

    def nodes(self, **filters: Any) -> Iterator[node_pb2.Node]:
        """Every node matching ListNodesRequest filters (env, model, region, liveness, state,
        subcloud), page by page."""
        token = ""
        while True:
            request = npb.ListNodesRequest(page_size=PAGE, page_token=token, **filters)
            page: npb.ListNodesResponse = self.node_stub.ListNodes(request, **self._opts())
            yield from page.nodes
            token = page.next_page_token
            if not token:
                return

    def count_nodes(self, env: str = "", model: str = "", region: str = "") -> list[npb.ModelRegionCount]:
        request = npb.CountNodesRequest(env=env, model=model, region=region)
        return list(self.node_stub.CountNodes(request, **self._opts()).counts)

    def watch(
        self,
        *,
        env: str = "",
        region: str = "",
        types: list[node_pb2.NodeEventType] | None = None,
        resume_token: str = "",
        stop: threading.Event | None = None,
        max_backoff: float = 5.0,
    ) -> Iterator[node_pb2.NodeEvent]:
        """Node events as they happen, until `stop` is set; after a dropped stream it resumes
        from the last event it yielded, so none is skipped or repeated."""
        token = resume_token

        def opened() -> Any:
            request = npb.WatchRequest(env=env, region=region, types=types or [], resume_token=token)
            return self.node_stub.Watch(request, metadata=self.metadata)

        for item in reopened(opened, stop or threading.Event(), reconnect_or_raise, max_backoff):
            token = item.event.resume_token
            yield item.event

    def __enter__(self) -> Admin:
        return self
