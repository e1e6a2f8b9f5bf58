"""The fleet as the metrics and the status page show it: nodes by region and liveness, idle
nodes and waiting jobs by region and model, flags in force by kind, the latest node events.

Read every FLEET_EVERY seconds on a thread of its own, never per scrape or page view: neither
costs Redis work however often it comes, and the read is bounded (a few pipelines, a few commands
a partition and a model; flags for the first FLAGGED_READ nodes that have any; the last
EVENTS_READ events of each partition). Each read makes a FleetSnapshot (the status page renders
the latest) and sets the gauges from it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Any

import redis.exceptions
from prometheus_client import Gauge

from livestate.server.core import metrics
from livestate.server.core.clock import redis_now_ms
from livestate.server.store.keys import Partition
from livestate.server.store.reads import fetch_controls
from livestate.server.store.records import flags_from_control
from livestate.server.store.runtime import Runtime
from livestate.v1 import flag_pb2, node_pb2

log = logging.getLogger(__name__)

FLEET_EVERY = 5.0
FLAGGED_READ = 10_000
EVENTS_READ = 20
EVENTS_SHOWN = 50

# match.lua orders a channel by -priority * 2^41 + enqueued (ms): the low 41 bits are the time.
_PRIORITY_STEP = 2**41


Series = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Event:
    at_ms: int
    kind: str  # NodeEventType name
    node_id: str
    env: str
    region: str
    detail: str


@dataclasses.dataclass(frozen=True)
class FleetSnapshot:
    taken_ms: int  # on the Redis clock
    nodes: dict[Series, float]  # (env, region, liveness) -> count
    idle: dict[Series, float]  # (env, region, model) -> nodes with a free slot
    depth: dict[Series, float]  # (env, region, model) -> jobs waiting
    head_wait: dict[Series, float]  # (env, region, model) -> seconds the first in line has waited
    flags: dict[Series, float]  # (kind,) -> flags in force
    events: list[Event]  # newest first


def _set_all(gauge: Gauge, values: dict[Series, float], previous: set[Series]) -> set[Series]:
    """Sets every series in `values` and removes the ones the last read had and this one lacks."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for labels in previous - values.keys():
        gauge.remove(*labels)
    return set(values)


class FleetMetrics:
    def __init__(self, rt: Runtime, every: float = FLEET_EVERY) -> None:
        self.rt = rt
        self.every = every
        self.reads = 0
        self.snapshot: FleetSnapshot | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-metrics", daemon=True)
        self._series: dict[str, set[Series]] = collections.defaultdict(set)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with metrics.FLEET_READ_SECONDS.time():
                    self.read()
                self.reads += 1
            except redis.exceptions.RedisError as exc:
                log.debug("fleet metrics: redis not answering: %s", exc)
            except Exception:
                log.exception("fleet metrics read failed")
            self._stop.wait(self.every)

    def read(self) -> FleetSnapshot:
        rt = self.rt
        parts = rt.catalogue.partitions()
        pipe = rt.client.pipeline(transaction=False)
        pipe.execute_command("TIME")  # not pipe.time(): the cluster pipeline refuses it
        for p in parts:
            pk = rt.keys.partition(p)
            pipe.zcard(pk.alive)
            pipe.zcard(pk.suspect)
            pipe.zcard(pk.offline)
            pipe.smembers(pk.models)
            pipe.smembers(pk.wait_models)
            pipe.xrevrange(pk.events, "+", "-", count=EVENTS_READ)
        now_reply, *replies = pipe.execute()
        now = redis_now_ms(now_reply)

        nodes: dict[Series, float] = {}
        queued: list[tuple[Partition, str, str]] = []  # (partition, "idle" | "wait", model)
        pipe = rt.client.pipeline(transaction=False)
        events: list[Event] = []
        for i, p in enumerate(parts):
            alive, suspect, offline, models, waited, stream = replies[6 * i : 6 * i + 6]
            events += [_event(p, entry_id, fields) for entry_id, fields in stream]
            for liveness, count in (("ONLINE", alive), ("SUSPECT", suspect), ("OFFLINE", offline)):
                key = (p.env, p.region, liveness)
                nodes[key] = nodes.get(key, 0) + int(count)
            pk = rt.keys.partition(p)
            for model in sorted(str(m) for m in models):
                pipe.zcard(pk.idle_queue(model))
                queued.append((p, "idle", model))
            for model in sorted(str(m) for m in waited):
                pipe.zcard(pk.wait_queue(model))
                pipe.zrange(pk.wait_queue(model), 0, 0, withscores=True)
                queued.append((p, "wait", model))
        results: list[Any] = pipe.execute() if queued else []

        idle: dict[Series, float] = {}
        depth: dict[Series, float] = {}
        head: dict[Series, float] = {}
        at = 0
        for p, kind, model in queued:
            key = (p.env, p.region, model)
            if kind == "idle":
                idle[key] = idle.get(key, 0) + int(results[at])
                at += 1
                continue
            count, first = results[at], results[at + 1]
            at += 2
            depth[key] = depth.get(key, 0) + int(count)
            if first:
                enqueued = int(first[0][1]) % _PRIORITY_STEP
                head[key] = max(head.get(key, 0.0), max(0, now - enqueued) / 1000)

        snapshot = FleetSnapshot(
            taken_ms=now,
            nodes=nodes,
            idle=idle,
            depth=depth,
            head_wait=head,
            flags=self._read_flags(),
            events=sorted(events, key=lambda e: e.at_ms, reverse=True)[:EVENTS_SHOWN],
        )
        self._publish(snapshot)
        self.snapshot = snapshot
        return snapshot

    def _publish(self, snapshot: FleetSnapshot) -> None:
        for name, gauge, values in (
            ("nodes", metrics.NODES, snapshot.nodes),
            ("idle", metrics.IDLE_NODES, snapshot.idle),
            ("depth", metrics.QUEUE_DEPTH, snapshot.depth),
            ("head", metrics.QUEUE_HEAD_WAIT, snapshot.head_wait),
            ("flags", metrics.FLAGS, snapshot.flags),
        ):
            self._series[name] = _set_all(gauge, values, self._series[name])

    def _read_flags(self) -> dict[Series, float]:
        rt = self.rt
        node_ids = [str(n) for n in rt.client.zrange(rt.keys.flagged, 0, FLAGGED_READ - 1)]
        kinds = [name for name, _ in flag_pb2.FlagKind.items() if name != "FLAG_KIND_UNSPECIFIED"]
        counts: dict[Series, float] = {(name,): 0 for name in kinds}
        for node_id, control, now in fetch_controls(rt, node_ids):
            for flag in flags_from_control(node_id, control, now):
                counts[(flag_pb2.FlagKind.Name(flag.kind),)] += 1
        return counts


def _event(p: Partition, entry_id: str, fields: dict[str, str]) -> Event:
    try:
        kind = node_pb2.NodeEventType.Name(int(fields.get("type", "0")))
    except ValueError:
        kind = str(fields.get("type", ""))
    return Event(
        at_ms=int(str(entry_id).split("-", 1)[0]),
        kind=kind.removeprefix("NODE_EVENT_TYPE_"),
        node_id=str(fields.get("node", "")),
        env=p.env,
        region=p.region,
        detail=str(fields.get("detail", "")),
    )
