"""Reading node records back as `Node` messages (shared by Register and NodeService), and nodes'
flag fields (ListFlags, the fleet metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from livestate.server.core.clock import redis_now_ms
from livestate.server.store.keys import Partition, PartitionKeys
from livestate.server.store.records import Hearing, node_from_record
from livestate.server.store.runtime import Runtime
from livestate.server.store.scripts import Command
from livestate.v1 import node_pb2


def node_reads(pk: PartitionKeys, node_ids: Sequence[str]) -> list[Command]:
    """Every record plus the Redis clock and the partition's hearing, so liveness is judged
    exactly as the scripts judge it; pass the replies, in order, to `nodes_from_replies`."""
    commands: list[Command] = [("TIME",), ("HMGET", pk.meta, "pulse", "ostart", "oend")]
    for node_id in node_ids:
        commands += [("HGETALL", pk.node(node_id)), ("HGETALL", pk.control(node_id))]
    return commands


def queue_node_reads(pipe: redis.client.Pipeline, pk: PartitionKeys, node_ids: Sequence[str]) -> None:
    """`node_reads` on a pipeline (whose replies redis-py shapes: a hash is a dict)."""
    for command in node_reads(pk, node_ids):
        pipe.execute_command(*command)


def shaped(commands: Sequence[Command], replies: Sequence[Any]) -> list[Any]:
    """Raw replies (the loop's connection) as redis-py shapes them: a hash as a dict."""
    return [
        dict(zip(reply[0::2], reply[1::2], strict=True)) if command[0] == "HGETALL" else reply
        for command, reply in zip(commands, replies, strict=True)
    ]


def nodes_from_replies(
    rt: Runtime, node_ids: Sequence[str], replies: Sequence[Any]
) -> list[node_pb2.Node | None]:
    """Forgotten nodes come back as None."""
    now_reply, meta, *pairs = replies
    records, controls = pairs[0::2], pairs[1::2]
    now = redis_now_ms(now_reply)
    hearing = Hearing.read(meta, now, rt.epoch.current, rt.config)
    granted = rt.subclouds.granted()
    return [
        node_from_record(node_id, record, now, hearing, rt.config, control, granted=granted)
        if record
        else None
        for node_id, record, control in zip(node_ids, records, controls, strict=True)
    ]


def fetch_nodes(rt: Runtime, partition: Partition, node_ids: Sequence[str]) -> list[node_pb2.Node | None]:
    pipe = rt.client.pipeline(transaction=False)
    queue_node_reads(pipe, rt.keys.partition(partition), node_ids)
    return nodes_from_replies(rt, node_ids, pipe.execute())


def fetch_node(rt: Runtime, partition: Partition, node_id: str) -> node_pb2.Node | None:
    return fetch_nodes(rt, partition, [node_id])[0]


def fetch_controls(rt: Runtime, node_ids: Sequence[str]) -> list[tuple[str, dict[str, str], int]]:
    """Each node's flag fields (its partition's control hash, or its pending flags), with now."""
    pipe = rt.client.pipeline(transaction=False)
    pipe.execute_command("TIME")  # not pipe.time(): the cluster pipeline refuses it
    for node_id in node_ids:
        pipe.get(rt.keys.locator(node_id))
    now_reply, *labels = pipe.execute()
    pipe = rt.client.pipeline(transaction=False)
    for node_id, label in zip(node_ids, labels, strict=True):
        if label:
            pipe.hgetall(rt.keys.partition(Partition.from_label(str(label))).control(node_id))
        else:
            pipe.hgetall(rt.keys.pending_flags(node_id))
    controls = pipe.execute() if node_ids else []
    now = redis_now_ms(now_reply)
    return [(n, {str(k): str(v) for k, v in c.items()}, now) for n, c in zip(node_ids, controls, strict=True)]
