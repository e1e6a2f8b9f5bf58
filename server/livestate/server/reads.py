"""Reading node records back as `Node` messages (shared by Register and NodeService)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from livestate.server.keys import Partition, PartitionKeys
from livestate.server.records import Hearing, node_from_record
from livestate.server.runtime import Runtime
from livestate.v1 import node_pb2


def redis_now_ms(time_reply: Sequence[int | str]) -> int:
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


def queue_node_reads(pipe: redis.client.Pipeline, pk: PartitionKeys, node_ids: Sequence[str]) -> None:
    """Every record plus the Redis clock and the partition's hearing, so liveness is judged
    exactly as the scripts judge it; pass the replies, in order, to `nodes_from_replies`."""
    pipe.time()
    pipe.hmget(pk.meta, ["pulse", "ostart", "oend"])
    for node_id in node_ids:
        pipe.hgetall(pk.node(node_id))
        pipe.hgetall(pk.control(node_id))


def nodes_from_replies(
    rt: Runtime, node_ids: Sequence[str], replies: Sequence[Any]
) -> list[node_pb2.Node | None]:
    """Forgotten nodes come back as None."""
    now_reply, meta, *pairs = replies
    records, controls = pairs[0::2], pairs[1::2]
    now = redis_now_ms(now_reply)
    hearing = Hearing.read(meta, now, rt.epoch.current, rt.config)
    return [
        node_from_record(node_id, record, now, hearing, rt.config, control) if record else None
        for node_id, record, control in zip(node_ids, records, controls, strict=True)
    ]


def fetch_nodes(rt: Runtime, partition: Partition, node_ids: Sequence[str]) -> list[node_pb2.Node | None]:
    pipe = rt.client.pipeline(transaction=False)
    queue_node_reads(pipe, rt.keys.partition(partition), node_ids)
    return nodes_from_replies(rt, node_ids, pipe.execute())


def fetch_node(rt: Runtime, partition: Partition, node_id: str) -> node_pb2.Node | None:
    return fetch_nodes(rt, partition, [node_id])[0]
