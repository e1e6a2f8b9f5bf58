"""The same-run baselines: gRPC servers that answer beats and Matches with fixed responses, no Redis.

`threaded` is what livestate replaced (a thread per stream): the ceiling for CPU per beat.
`on_loop` is the least any grpc.aio server can do on this machine while a fleet streams: the floor
for ack and Match latency, since the load generators share the cores (and, on a VM, the host).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc

from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc
from livestate.v1 import lease_pb2
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import match_service_pb2_grpc as mpb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
CANNED = mpb.MatchResponse(lease=lease_pb2.Lease(lease_id="bench/r0/0/abcdef0123", node_id="bench-000000"))


def threaded(port: int, workers: int = 512) -> None:
    class Beats(hb_grpc.HeartbeatServiceServicer):
        def Heartbeat(
            self, request_iterator: Iterator[hb.HeartbeatRequest], context: grpc.ServicerContext
        ) -> Iterator[hb.HeartbeatResponse]:
            for request in request_iterator:
                yield hb.HeartbeatResponse(seq=request.seq)

    class Matches(mpb_grpc.MatchServiceServicer):
        def Match(self, request: mpb.MatchRequest, context: grpc.ServicerContext) -> mpb.MatchResponse:
            return CANNED

        def Release(self, request: mpb.ReleaseRequest, context: grpc.ServicerContext) -> mpb.ReleaseResponse:
            return mpb.ReleaseResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), maximum_concurrent_rpcs=workers)
    hb_grpc.add_HeartbeatServiceServicer_to_server(Beats(), server)
    mpb_grpc.add_MatchServiceServicer_to_server(Matches(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def on_loop(port: int) -> None:
    class Beats(hb_grpc.HeartbeatServiceServicer):
        async def Heartbeat(
            self, request_iterator: AsyncIterator[hb.HeartbeatRequest], context: Context
        ) -> AsyncIterator[hb.HeartbeatResponse]:
            async for request in request_iterator:
                yield hb.HeartbeatResponse(seq=request.seq)

    class Matches(mpb_grpc.MatchServiceServicer):
        async def Match(self, request: mpb.MatchRequest, context: Context) -> mpb.MatchResponse:
            return CANNED

        async def Release(self, request: mpb.ReleaseRequest, context: Context) -> mpb.ReleaseResponse:
            return mpb.ReleaseResponse()

    async def serve() -> None:
        server = grpc.aio.server()
        hb_grpc.add_HeartbeatServiceServicer_to_server(Beats(), server)
        mpb_grpc.add_MatchServiceServicer_to_server(Matches(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())
