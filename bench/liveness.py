"""How long after its last beat a node is seen SUSPECT and OFFLINE, over many nodes.

A server of its own (its own key prefix on the same Redis, a 1 s heartbeat interval, so
suspect_after 3 s and offline_after 5 s) registers `count` nodes that then never beat again;
a Watch stream collects their SUSPECT and OFFLINE events. The delay of each is the event's
time (the Redis clock, the same machine's) minus the moment the node's Register was answered,
reported as the lag over the configured deadline: what a sweep every `sweep_interval` adds.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from bench.stats import pct_ms
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc
from livestate.v1 import node_pb2
from livestate.v1 import node_service_pb2 as npb
from livestate.v1 import node_service_pb2_grpc as npb_grpc

INTERVAL = 1.0
SUSPECT_AFTER = 3.0
OFFLINE_AFTER = 5.0


def run(command: list[str], redis_url: str, port: int, count: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "LIVESTATE_REDIS_URL": redis_url,
        "LIVESTATE_KEY_PREFIX": "lsliveness",
        "LIVESTATE_LOG_LEVEL": "WARNING",
        "LIVESTATE_HEARTBEAT_INTERVAL": str(INTERVAL),
        "LIVESTATE_SUSPECT_AFTER": str(SUSPECT_AFTER),
        "LIVESTATE_OFFLINE_AFTER": str(OFFLINE_AFTER),
    }
    server = subprocess.Popen([*command, f"127.0.0.1:{port}"], env=env, cwd=Path(__file__).parent)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        seen: dict[tuple[str, int], float] = {}
        done = threading.Event()
        watch = npb_grpc.NodeServiceStub(channel).Watch(
            npb.WatchRequest(
                env="liveness",
                types=[node_pb2.NODE_EVENT_TYPE_SUSPECT, node_pb2.NODE_EVENT_TYPE_OFFLINE],
            )
        )

        def collect() -> None:
            try:
                for reply in watch:
                    event = reply.event
                    seen[(event.node_id, event.type)] = event.event_time.ToNanoseconds() / 1e9
                    if len(seen) == 2 * count:
                        done.set()
                        return
            except grpc.RpcError:
                return

        # No wait for the Watch to open: the first event it must see comes suspect_after later.
        threading.Thread(target=collect, daemon=True).start()
        stub = hb_grpc.HeartbeatServiceStub(channel)
        beaten: dict[str, float] = {}

        def register(i: int) -> None:
            node_id = f"live-{i:06d}"
            spec = node_pb2.NodeSpec(
                node_id=node_id, env="liveness", region=f"r{i % 4}", models=["m"], gpu_count=1
            )
            stub.Register(hb.RegisterRequest(node=spec, boot_id="b"), timeout=30)
            beaten[node_id] = time.time()

        with futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(register, range(count)))
        done.wait(timeout=OFFLINE_AFTER + 30)
        watch.cancel()
        found: dict[str, Any] = {
            "nodes": count,
            "suspect_after_s": SUSPECT_AFTER,
            "offline_after_s": OFFLINE_AFTER,
        }
        for stage, kind, deadline in (
            ("suspect", node_pb2.NODE_EVENT_TYPE_SUSPECT, SUSPECT_AFTER),
            ("offline", node_pb2.NODE_EVENT_TYPE_OFFLINE, OFFLINE_AFTER),
        ):
            lags = [seen[(n, kind)] - t - deadline for n, t in beaten.items() if (n, kind) in seen]
            found[f"{stage}_seen"] = len(lags)
            for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
                found[f"{stage}_lag_{name}_ms"] = pct_ms(lags, q)
        return found
    finally:
        channel.close()
        server.terminate()
        server.wait(timeout=15)
