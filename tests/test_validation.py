"""Bad input: a clear status naming the field, nothing written to Redis, never INTERNAL."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest

from harness import IDLE, Harness, error_field, spec
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import node_pb2
from livestate.v1 import node_service_pb2 as ns


def _assert_invalid(call: Any, field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert error_field(err.value) == field
    assert field in (err.value.details() or "")


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"node_id": ""}, "node.node_id"),
    ({"node_id": "has space"}, "node.node_id"),
    ({"node_id": "x" * 129}, "node.node_id"),
    ({"node_id": "brace{tag}"}, "node.node_id"),
    ({"env": ""}, "node.env"),
    ({"env": "a/b"}, "node.env"),
    ({"region": "eu west"}, "node.region"),
    ({"models": ["ok", "bad,comma"]}, "node.models[1]"),
    ({"models": ["dup", "dup"]}, "node.models"),
    ({"models": [f"m{i}" for i in range(65)]}, "node.models"),
    ({"subclouds": [""]}, "node.subclouds[0]"),
    ({"labels": {"bad key": "v"}}, "node.labels['bad key']"),
    ({"labels": {"k": "x" * 257}}, "node.labels['k']"),
    ({"labels": {f"k{i}": "v" for i in range(65)}}, "node.labels"),
    ({"gpu_model": "é"}, "node.gpu_model"),
    ({"slots": 5000}, "node.slots"),
    ({"agent_version": "v" * 129}, "node.agent_version"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_SPECS)
def test_register_rejects_bad_spec_and_writes_nothing(
    ls: Harness, fields: dict[str, Any], field: str
) -> None:
    values = {"node_id": "gpu-1", **fields}
    node_id = values.pop("node_id")
    request = hb.RegisterRequest(node=spec(node_id, **values), boot_id="boot-1")

    _assert_invalid(lambda: ls.heartbeat.Register(request, timeout=5), field)

    assert set(ls.redis.keys()) <= {ls.server.rt.keys.epoch, ls.server.rt.keys.sweeper}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"boot_id": ""}, "boot_id"),
        ({"boot_id": "bad boot"}, "boot_id"),
        ({"state": 99}, "state"),
        ({"vram_free_mb": 24_001}, "vram_free_mb"),
    ],
)
def test_register_rejects_bad_request_fields(ls: Harness, request_fields: dict[str, Any], field: str) -> None:
    request = hb.RegisterRequest(node=spec("gpu-1"), **{"boot_id": "boot-1", **request_fields})
    _assert_invalid(lambda: ls.heartbeat.Register(request, timeout=5), field)
    assert not ls.redis.exists(ls.server.rt.keys.locator("gpu-1"))


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"node_id": ""}, "node_id"),
        ({"node_id": "../etc"}, "node_id"),
        ({"boot_id": ""}, "boot_id"),
        ({"state": node_pb2.NODE_STATE_UNSPECIFIED}, "state"),
        ({"state": 42}, "state"),
    ],
)
def test_beat_rejects_bad_fields_and_changes_nothing(
    ls: Harness, request_fields: dict[str, Any], field: str
) -> None:
    boot, _ = ls.register("gpu-1")
    values = {"node_id": "gpu-1", "boot_id": boot, "seq": 5, "state": IDLE, **request_fields}
    before = ls.get("gpu-1")

    _assert_invalid(lambda: ls.heartbeat.Beat(hb.BeatRequest(**values), timeout=5), field)
    stream = ls.heartbeat.Heartbeat(iter([hb.HeartbeatRequest(**values)]), timeout=5)
    _assert_invalid(lambda: list(stream), field)

    after = ls.get("gpu-1")
    assert (after.seq, after.state) == (before.seq, before.state)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [({"node_id": ""}, "node_id"), ({"node_id": "gpu-1", "boot_id": ""}, "boot_id")],
)
def test_deregister_rejects_bad_fields(ls: Harness, request_fields: dict[str, Any], field: str) -> None:
    _assert_invalid(lambda: ls.heartbeat.Deregister(hb.DeregisterRequest(**request_fields), timeout=5), field)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"liveness": 7}, "liveness"),
        ({"state": 9}, "state"),
        ({"env": "no spaces"}, "env"),
        ({"model": "a,b"}, "model"),
    ],
)
def test_list_nodes_rejects_bad_filters(ls: Harness, request_fields: dict[str, Any], field: str) -> None:
    _assert_invalid(lambda: ls.nodes.ListNodes(ns.ListNodesRequest(**request_fields), timeout=5), field)


def test_get_node_rejects_malformed_id(ls: Harness) -> None:
    _assert_invalid(lambda: ls.nodes.GetNode(ns.GetNodeRequest(node_id="a b"), timeout=5), "node_id")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"node_id": "gpu-1\n"}, "node.node_id"),
        ({"env": "test\n"}, "node.env"),
        ({"region": "eu-west\n"}, "node.region"),
        ({"models": ["llama\n"]}, "node.models[0]"),
        ({"gpu_model": "L4\n"}, "node.gpu_model"),
        ({"labels": {"k\n": "v"}}, "node.labels['k\\n']"),
    ],
)
def test_a_trailing_newline_is_not_part_of_any_name(ls: Harness, fields: dict[str, Any], field: str) -> None:
    """`$` in a pattern also matches before a final newline: every check must match the whole value."""
    values = {"node_id": "gpu-1", **fields}
    node_id = values.pop("node_id")
    request = hb.RegisterRequest(node=spec(node_id, **values), boot_id="boot-1")
    _assert_invalid(lambda: ls.heartbeat.Register(request, timeout=5), field)


def test_oversized_message_is_refused_before_it_is_read(ls: Harness) -> None:
    huge = spec("gpu-1", agent_version="x" * (ls.config.max_message_bytes + 1))
    with pytest.raises(grpc.RpcError) as err:
        ls.heartbeat.Register(hb.RegisterRequest(node=huge, boot_id="b"), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not ls.redis.exists(ls.server.rt.keys.locator("gpu-1"))


METHODS = [
    ("/livestate.v1.HeartbeatService/Register", False),
    ("/livestate.v1.HeartbeatService/Beat", False),
    ("/livestate.v1.HeartbeatService/Deregister", False),
    ("/livestate.v1.HeartbeatService/Heartbeat", True),
    ("/livestate.v1.NodeService/GetNode", False),
    ("/livestate.v1.NodeService/ListNodes", False),
    ("/livestate.v1.NodeService/CountNodes", False),
]


@pytest.mark.parametrize(("method", "streaming"), METHODS)
def test_fuzzed_request_bytes_never_answer_internal(ls: Harness, method: str, streaming: bool) -> None:
    rng = random.Random(method)
    call: Any = (
        ls.channel.stream_stream(method, None, None)
        if streaming
        else ls.channel.unary_unary(method, None, None)
    )
    payloads = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) for _ in range(60)]
    payloads += [
        b"\x0a\x05\xff\xfe\xfd\xfc\xfb",
        b"\x0a",
        b"\x12\x80\x80\x80\x80\x10",
    ]  # bad UTF-8, truncated
    codes = set()
    for payload in payloads:
        try:
            if streaming:
                list(call(iter([payload]), timeout=5))
            else:
                call(payload, timeout=5)
            codes.add(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            codes.add(err.code())
    assert grpc.StatusCode.INTERNAL not in codes
    assert grpc.StatusCode.UNKNOWN not in codes
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    # The server is still healthy afterwards.
    assert ls.beat("ghost", "boot").resync_required
