"""NodeService.Watch: node events from every partition's capped event stream.

Every server process writes events into the partition streams (from the scripts), so any process
can serve any watcher. A resume token records the position in each partition's stream; a watcher
that reconnects with its last token misses nothing still retained, and is told OUT_OF_RANGE when
the streams were trimmed past its position (or Redis lost them), so it knows to re-list.
Events of one partition arrive in order; events of different partitions may interleave.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import redis

from livestate.server.core.clock import timestamp
from livestate.server.core.errors import LivestateError, from_redis
from livestate.server.domain import paging, validate
from livestate.server.store.keys import Partition
from livestate.server.store.runtime import Runtime
from livestate.v1 import node_pb2
from livestate.v1 import node_service_pb2 as pb

POLL = 0.1
REFRESH_PARTITIONS = 1.0
BATCH = 256
# Partitions one resume token may name. Each costs a round trip before the watch starts, and a
# deployment has tens of partitions; more than this is not a token the server wrote.
MAX_POSITIONS = 4096


class OutOfRange(LivestateError, code=grpc.StatusCode.OUT_OF_RANGE, reason="RESUME_TOKEN_TOO_OLD"):
    """A resume token from before what the capped event streams still hold."""


def _id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def encode(positions: dict[str, str]) -> str:
    return paging.encode(positions)


def decode(token: str) -> dict[str, str]:
    """The positions a resume token names (partition label -> stream entry id)."""
    return dict(paging.decode(token, _is_positions, "resume_token") or {})


def _is_positions(raw: Any) -> bool:
    return (
        isinstance(raw, dict)
        and len(raw) <= MAX_POSITIONS
        and all(validate.is_partition_label(k) and validate.is_stream_id(v) for k, v in raw.items())
    )


def check_retained(rt: Runtime, positions: dict[str, str]) -> None:
    """OUT_OF_RANGE when events after a position may be gone: the stream was trimmed past the
    event the token names (trimming drops the oldest entries, so the named event is the last
    one that can vouch for its successors), or Redis lost the stream."""
    for label, position in positions.items():
        key = rt.keys.partition(Partition.from_label(label)).events
        pipe = rt.client.pipeline(transaction=False)
        pipe.xlen(key)
        pipe.xrange(key, position, position, count=1)
        pipe.xinfo_stream(key)
        length, named, info = pipe.execute(raise_on_error=False)
        for reply in (length, named, info):
            # A Redis that cannot answer (MASTERDOWN, LOADING...) is not a stream that is gone.
            if isinstance(reply, redis.exceptions.RedisError) and from_redis(reply) is not None:
                raise reply
        if isinstance(info, redis.exceptions.ResponseError):  # no such stream
            if _id(position) > (0, 0):
                raise OutOfRange(f"the events after the token in {label} are gone: list again")
            continue
        if isinstance(info, Exception):
            raise info
        # From the very start: gone if anything was ever trimmed. Else: gone if the named event is.
        from_start = _id(position) == (0, 0)
        if (int(info.get("entries-added", 0)) > int(length)) if from_start else not named:
            raise OutOfRange(f"the events after the token in {label} were trimmed: list again")


def watch(rt: Runtime, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchResponse]:
    def wanted() -> list[Partition]:
        return rt.catalogue.partitions(request.env, request.region or None, fresh=True)

    types = set(request.types)
    if request.resume_token:
        positions = decode(request.resume_token)
        check_retained(rt, positions)
    else:
        positions = {}
        for p in wanted():  # from now on
            last = rt.client.xrevrange(rt.keys.partition(p).events, "+", "-", count=1)
            positions[p.label] = str(last[0][0]) if last else "0-0"
    refreshed = time.monotonic()
    parts = wanted()
    while context.is_active():
        if time.monotonic() - refreshed > REFRESH_PARTITIONS:
            parts, refreshed = wanted(), time.monotonic()
        for p in parts:
            positions.setdefault(p.label, "0-0")  # a partition new since the watch began: all of it
        pipe = rt.client.pipeline(transaction=False)
        for p in parts:
            pipe.xread({rt.keys.partition(p).events: positions[p.label]}, count=BATCH)
        delivered = 0
        for p, reply in zip(parts, pipe.execute(), strict=True):
            for _, entries in reply or []:
                for raw_id, fields in entries:
                    entry_id = str(raw_id)
                    positions[p.label] = entry_id
                    kind = int(fields.get("type", "0"))
                    if types and kind not in types:
                        continue
                    delivered += 1
                    yield pb.WatchResponse(
                        event=node_pb2.NodeEvent(
                            resume_token=encode(positions),
                            type=kind,  # type: ignore[arg-type]
                            node_id=str(fields.get("node", "")),
                            env=p.env,
                            region=p.region,
                            event_time=timestamp(_id(entry_id)[0]),
                            detail=str(fields.get("detail", "")),
                        )
                    )
        if not delivered:
            time.sleep(POLL)
