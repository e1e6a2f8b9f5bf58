"""NodeService.Watch: events in order, filters, resuming from a token, OUT_OF_RANGE when too old."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import grpc
import pytest

from conftest import ServerFactory
from harness import Harness, error_field
from livestate.v1 import flag_pb2, node_pb2
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import node_service_pb2 as ns


class Watcher:
    def __init__(self, ls: Harness, **fields: object) -> None:
        self.call = ls.nodes.Watch(ns.WatchRequest(**fields), timeout=30)  # type: ignore[arg-type]
        self.got: queue.Queue[node_pb2.NodeEvent] = queue.Queue()
        self.error: list[grpc.RpcError] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.call:
                self.got.put(item.event)
        except grpc.RpcError as err:
            self.error.append(err)

    def take(self, n: int, timeout: float = 3.0) -> list[node_pb2.NodeEvent]:
        return [self.got.get(timeout=timeout) for _ in range(n)]

    def take_for(self, node_id: str, n: int, timeout: float = 5.0) -> list[node_pb2.NodeEvent]:
        """The next n events of one node, skipping others (the sentinel's)."""
        deadline = time.monotonic() + timeout
        found: list[node_pb2.NodeEvent] = []
        while len(found) < n:
            event = self.got.get(timeout=max(0.01, deadline - time.monotonic()))
            if event.node_id == node_id:
                found.append(event)
        return found

    def establish(self, poke: Callable[[], None]) -> node_pb2.NodeEvent:
        """A watch starts from "now" as the server sees it: poke until an event shows it is live;
        returns that event."""
        for _ in range(50):
            poke()
            try:
                return self.got.get(timeout=0.1)
            except queue.Empty:
                continue
        raise AssertionError("the watch never delivered an event")

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=5)


def _sentinel(ls: Harness) -> Callable[[], None]:
    """Each call makes a FLAGGED event for the node "sentinel" (in the default partition)."""

    def poke() -> None:
        _pause(ls, "sentinel", False)
        _pause(ls, "sentinel", True)

    return poke


def _pause(ls: Harness, node_id: str, on: bool) -> None:
    kind = flag_pb2.FLAG_KIND_PAUSE
    if on:
        ls.flags.SetFlag(fpb.SetFlagRequest(node_id=node_id, kind=kind), timeout=5)
    else:
        ls.flags.ClearFlag(fpb.ClearFlagRequest(node_id=node_id, kind=kind), timeout=5)


def test_watch_streams_events_in_order(ls: Harness) -> None:
    ls.register("sentinel")  # its partition exists before the watch starts
    w = Watcher(ls, env="test")
    try:
        w.establish(_sentinel(ls))
        boot, _ = ls.register("gpu-1")
        _pause(ls, "gpu-1", True)
        _pause(ls, "gpu-1", False)
        ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="gpu-1", boot_id=boot), timeout=5)

        events = w.take_for("gpu-1", 4)
    finally:
        w.close()
    assert [(e.type, e.node_id) for e in events] == [
        (node_pb2.NODE_EVENT_TYPE_ONLINE, "gpu-1"),
        (node_pb2.NODE_EVENT_TYPE_FLAGGED, "gpu-1"),
        (node_pb2.NODE_EVENT_TYPE_UNFLAGGED, "gpu-1"),
        (node_pb2.NODE_EVENT_TYPE_OFFLINE, "gpu-1"),
    ]
    assert all((e.env, e.region) == ("test", "eu-west") for e in events)
    assert all(e.event_time.seconds > 0 and e.resume_token for e in events)


def test_watch_filters_by_type_and_sees_new_partitions(ls: Harness) -> None:
    ls.register("sentinel")
    w = Watcher(ls, env="test", types=[node_pb2.NODE_EVENT_TYPE_FLAGGED])
    try:
        w.establish(_sentinel(ls))
        ls.register("far-1", region="ap-south")  # a partition the watch has not seen yet
        _pause(ls, "far-1", True)
        (event,) = w.take_for("far-1", 1)
    finally:
        w.close()
    assert (event.type, event.node_id, event.region) == (
        node_pb2.NODE_EVENT_TYPE_FLAGGED,
        "far-1",
        "ap-south",
    )


def test_resuming_from_a_token_misses_nothing(ls: Harness) -> None:
    ls.register("sentinel")
    w = Watcher(ls, env="test")
    w.establish(_sentinel(ls))
    ls.register("gpu-1")
    (first,) = w.take_for("gpu-1", 1)
    w.close()

    for on in (True, False, True):  # while the watcher is away
        _pause(ls, "gpu-1", on)

    # Flag events only: neither node beats, and on a slow machine their SUSPECT events would
    # land in the window below.
    flags = [node_pb2.NODE_EVENT_TYPE_FLAGGED, node_pb2.NODE_EVENT_TYPE_UNFLAGGED]
    again = Watcher(ls, env="test", resume_token=first.resume_token, types=flags)
    try:
        events = again.take(3)
        with pytest.raises(queue.Empty):
            again.take(1, timeout=0.4)
    finally:
        again.close()
    assert [e.type for e in events] == [
        node_pb2.NODE_EVENT_TYPE_FLAGGED,
        node_pb2.NODE_EVENT_TYPE_UNFLAGGED,
        node_pb2.NODE_EVENT_TYPE_FLAGGED,
    ]


def test_token_older_than_what_is_retained_is_out_of_range(make_server: ServerFactory) -> None:
    ls = make_server(events_maxlen=5)
    ls.register("sentinel")
    w = Watcher(ls, env="test")
    old = w.establish(_sentinel(ls))
    w.close()
    for i in range(400):  # far past the cap: the stream is trimmed beyond the token
        _pause(ls, "sentinel", i % 2 == 1)

    late = Watcher(ls, env="test", resume_token=old.resume_token)
    late.thread.join(timeout=5)

    assert late.error and late.error[0].code() == grpc.StatusCode.OUT_OF_RANGE


def test_malformed_token_and_type_are_invalid(ls: Harness) -> None:
    for fields, field in (({"resume_token": "nope"}, "resume_token"), ({"types": [42]}, "types[0]")):
        with pytest.raises(grpc.RpcError) as err:
            list(ls.nodes.Watch(ns.WatchRequest(**fields), timeout=5))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_field(err.value) == field
