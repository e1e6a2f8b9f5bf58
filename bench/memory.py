"""Redis memory per registered node, and where it goes.

A fresh Redis and server of their own; nodes registered through the real Register RPC in turn up
to each count, all kept ONLINE (suspect_after beyond the run: a fleet that is beating is what the
target is about, and nodes moving to the suspect and offline sets while the rest register would
measure a half-expired fleet instead). At each count: used_memory grown over the empty instance
per node, and MEMORY USAGE of every key grouped by the kind of key (node record, model index,
idle queues, ...), so a miss names what to shrink. The per-node cost between two counts (the
slope) leaves out what does not grow with the fleet: the capped event streams, the script cache.
"""

from __future__ import annotations

import collections
import itertools
import os
import subprocess
from concurrent import futures
from typing import Any

import grpc
import redis

from livestate.server.store.embedded import EmbeddedRedis, free_port
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc
from livestate.v1 import node_pb2

# Nodes registered at a time: enough to keep the server busy, few enough for 2 cores.
REGISTER_THREADS = 16


def populate(port: int, count: int, boot: str, first: int = 0) -> None:
    """Registers nodes `first` to `count` - 1 through the real Register RPC, several at a time."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = hb_grpc.HeartbeatServiceStub(channel)

    def register(i: int) -> None:
        spec = node_pb2.NodeSpec(
            node_id=f"bench-{i:06d}",
            env="bench",
            region=f"r{i % 4}",
            models=["llama-3-8b", "mistral-7b"][: 1 + i % 2],
            gpu_model="NVIDIA L4",
            gpu_count=1,
            vram_total_mb=24_000,
            labels={"tier": "std"},
        )
        stub.Register(hb.RegisterRequest(node=spec, boot_id=boot), timeout=30)

    with futures.ThreadPoolExecutor(REGISTER_THREADS) as pool:
        list(pool.map(register, range(first, count)))
    channel.close()


def wait_ready(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)


def key_kind(key: str, prefix: str) -> str:
    """The kind of a livestate key: the first name after the prefix and any {partition} tag
    ('node', 'model', 'idlev', 'loc', ...)."""
    parts = key.removeprefix(prefix + ":").split(":")
    if parts[0].startswith("{") and len(parts) > 1:
        return parts[1]
    return parts[0]


def by_kind(client: redis.Redis, prefix: str) -> dict[str, int]:
    """MEMORY USAGE (every element counted) of each key under the prefix, summed by kind."""
    found: collections.Counter[str] = collections.Counter()
    batch: list[str] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, used in zip(batch, pipe.execute(), strict=True):
            found[key_kind(key, prefix)] += int(used or 0)
        batch.clear()

    for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(raw.decode() if isinstance(raw, bytes) else str(raw))
        if len(batch) >= 1000:
            flush()
    if batch:
        flush()
    return dict(found)


def run(command: list[str], counts: list[int], boot: str) -> list[dict[str, Any]]:
    """At each count (registered in turn): used_memory grown per node and the bytes per node of
    each kind of key."""
    found: list[dict[str, Any]] = []
    prefix = "lsmemory"
    with EmbeddedRedis() as embedded:
        port = free_port()
        env = {
            **os.environ,
            "LIVESTATE_REDIS_URL": embedded.url,
            "LIVESTATE_KEY_PREFIX": prefix,
            "LIVESTATE_LOG_LEVEL": "WARNING",
            "LIVESTATE_SUSPECT_AFTER": "1800",
            "LIVESTATE_OFFLINE_AFTER": "3600",
        }
        server = subprocess.Popen([*command, f"127.0.0.1:{port}"], env=env)
        client = redis.Redis.from_url(embedded.url)
        try:
            wait_ready(port)
            empty = int(client.info("memory")["used_memory"])
            registered = 0
            for count in sorted(counts):
                populate(port, count, boot, first=registered)
                registered = count
                grown = int(client.info("memory")["used_memory"]) - empty
                kinds = by_kind(client, prefix)
                found.append(
                    {
                        "nodes": count,
                        "grown_per_node": grown / count,
                        "kinds_per_node": {k: v / count for k, v in sorted(kinds.items())},
                        # What MEMORY USAGE does not attribute to a key: the keyspace's own
                        # tables, the expiry table, the script cache, allocator slack.
                        "unattributed_per_node": (grown - sum(kinds.values())) / count,
                    }
                )
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=15)
    for before, after in itertools.pairwise(found):
        added = after["nodes"] - before["nodes"]
        after["slope_per_node"] = (
            after["grown_per_node"] * after["nodes"] - before["grown_per_node"] * before["nodes"]
        ) / added
    return found
