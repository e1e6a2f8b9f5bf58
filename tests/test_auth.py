"""Access control: tokens and roles on every RPC, node binding, rate limits, TLS and mTLS, and
refusing to listen beyond loopback unprotected."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certs
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ServerFactory
from harness import Harness, error_reason, spec
from livestate.server import Config, ConfigError, LivestateServer
from livestate.server.api.auth import METHOD_ROLES, hash_token
from livestate.v1 import flag_pb2, node_pb2, node_service_pb2_grpc
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import node_service_pb2 as ns
from livestate.v1 import queue_service_pb2 as qpb

TOKENS: dict[str, dict[str, Any]] = {
    "admin": {"name": "alice", "role": "admin"},
    "sched": {"name": "sched-1", "role": "scheduler"},
    "reader": {"name": "dash", "role": "reader"},
    "node": {"name": "gpu-1-agent", "role": "node", "node_id": "gpu-1"},
    "slow": {"name": "slowpoke", "role": "reader", "rate": 1, "burst": 2},
    "pool": {"name": "pool", "role": "scheduler", "scheduler_ids": ["sched-a", "sched-b"]},
    "one": {"name": "one-token", "role": "scheduler", "scheduler_id": "sched-x"},
}


def _table() -> str:
    return json.dumps({"tokens": [{**entry, "sha256": hash_token(token)} for token, entry in TOKENS.items()]})


def _as(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
def secured(make_server: ServerFactory) -> Harness:
    return make_server(auth_tokens=_table())


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", sorted(METHOD_ROLES))
def test_every_rpc_without_a_token_is_unauthenticated(secured: Harness, method: str) -> None:
    streaming_request = method.endswith("/Heartbeat")
    streaming_response = method.endswith(("/Heartbeat", "/Watch", "/Assignments"))
    channel = secured.channel
    code: grpc.StatusCode
    if streaming_request:
        bidi = channel.stream_stream(method, None, None)
        code = _code(lambda: list(bidi(iter([b""]), timeout=5)))
    elif streaming_response:
        server_stream = channel.unary_stream(method, None, None)
        code = _code(lambda: list(server_stream(b"", timeout=5)))
    else:
        unary = channel.unary_unary(method, None, None)
        code = _code(lambda: unary(b"", timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_unknown_token_is_unauthenticated(secured: Harness) -> None:
    code = _code(lambda: secured.nodes.ListNodes(ns.ListNodesRequest(), timeout=5, metadata=_as("guess")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("token", "allowed"),
    [("admin", True), ("sched", False), ("reader", False), ("node", False)],
)
def test_flag_writes_are_admin_only(secured: Harness, token: str, allowed: bool) -> None:
    request = fpb.SetFlagRequest(node_id="gpu-9", kind=flag_pb2.FLAG_KIND_PAUSE)
    code = _code(lambda: secured.flags.SetFlag(request, timeout=5, metadata=_as(token)))
    assert code == (grpc.StatusCode.OK if allowed else grpc.StatusCode.PERMISSION_DENIED)


def test_roles_reach_what_they_should(secured: Harness) -> None:
    reg = hb.RegisterRequest(node=spec("gpu-1"), boot_id="b1")
    assert (
        _code(lambda: secured.heartbeat.Register(reg, timeout=5, metadata=_as("node"))) == grpc.StatusCode.OK
    )
    match = mpb.MatchRequest(job_id="j", env="test", model="llama-3-8b")
    assert (
        _code(lambda: secured.match_stub.Match(match, timeout=5, metadata=_as("node")))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        _code(lambda: secured.match_stub.Match(match, timeout=5, metadata=_as("reader")))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        _code(lambda: secured.match_stub.Match(match, timeout=5, metadata=_as("sched"))) == grpc.StatusCode.OK
    )
    get = ns.GetNodeRequest(node_id="gpu-1")
    for token in ("reader", "sched", "admin"):
        assert secured.nodes.GetNode(get, timeout=5, metadata=_as(token)).node.spec.node_id == "gpu-1"


def test_node_token_acts_only_for_its_own_node(secured: Harness) -> None:
    other = hb.RegisterRequest(node=spec("gpu-2"), boot_id="b1")
    with pytest.raises(grpc.RpcError) as err:
        secured.heartbeat.Register(other, timeout=5, metadata=_as("node"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(err.value) == "WRONG_NODE"
    beat = hb.BeatRequest(node_id="gpu-2", boot_id="b1", seq=1, state=node_pb2.NODE_STATE_IDLE)
    assert (
        _code(lambda: secured.heartbeat.Beat(beat, timeout=5, metadata=_as("node")))
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_node_token_deregisters_only_its_own_node(secured: Harness) -> None:
    other = hb.RegisterRequest(node=spec("gpu-2"), boot_id="b2")
    secured.heartbeat.Register(other, timeout=5, metadata=_as("admin"))
    leave = hb.DeregisterRequest(node_id="gpu-2", boot_id="b2")

    with pytest.raises(grpc.RpcError) as err:
        secured.heartbeat.Deregister(leave, timeout=5, metadata=_as("node"))

    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(err.value) == "WRONG_NODE"
    still = secured.nodes.GetNode(ns.GetNodeRequest(node_id="gpu-2"), timeout=5, metadata=_as("admin"))
    assert still.node.liveness == node_pb2.LIVENESS_ONLINE
    own = hb.RegisterRequest(node=spec("gpu-1"), boot_id="b1")
    secured.heartbeat.Register(own, timeout=5, metadata=_as("node"))
    bye = hb.DeregisterRequest(node_id="gpu-1", boot_id="b1")
    assert _code(lambda: secured.heartbeat.Deregister(bye, timeout=5, metadata=_as("node"))) == (
        grpc.StatusCode.OK
    )


def _assignments(secured: Harness, token: str, scheduler_id: str) -> grpc.StatusCode:
    """OK-or-waiting is DEADLINE_EXCEEDED: the stream was opened and sat waiting for work."""
    request = qpb.AssignmentsRequest(scheduler_id=scheduler_id)
    return _code(lambda: list(secured.queue.Assignments(request, timeout=0.5, metadata=_as(token))))


def _enqueue(secured: Harness, token: str, scheduler_id: str) -> grpc.RpcError | None:
    request = qpb.EnqueueRequest(
        job_id=f"job-{token}-{scheduler_id}", env="test", model="llama-3-8b", scheduler_id=scheduler_id
    )
    try:
        secured.queue.Enqueue(request, timeout=5, metadata=_as(token))
    except grpc.RpcError as err:
        return err
    return None


@pytest.mark.parametrize(
    ("token", "scheduler_id", "allowed"),
    [
        ("sched", "sched-1", True),  # no binding in the table: bound to the token's own name
        ("sched", "sched-2", False),
        ("pool", "sched-a", True),
        ("pool", "sched-b", True),
        ("pool", "pool", False),  # a listed binding replaces the name
        ("one", "sched-x", True),
        ("one", "one-token", False),
        ("admin", "sched-1", True),
        ("admin", "anyone", True),
    ],
)
def test_scheduler_token_reads_and_feeds_only_its_own_assignments(
    secured: Harness, token: str, scheduler_id: str, allowed: bool
) -> None:
    secured.heartbeat.Register(
        hb.RegisterRequest(node=spec("gpu-1"), boot_id="b1"), timeout=5, metadata=_as("node")
    )

    stream_code = _assignments(secured, token, scheduler_id)
    enqueue_error = _enqueue(secured, token, scheduler_id)

    if allowed:
        assert stream_code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert enqueue_error is None, enqueue_error
    else:
        assert stream_code == grpc.StatusCode.PERMISSION_DENIED
        assert enqueue_error is not None and enqueue_error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(enqueue_error) == "SCHEDULER_BINDING"
        assert not secured.redis.exists(secured.server.rt.keys.job(f"job-{token}-{scheduler_id}"))


def test_another_schedulers_stream_is_refused_before_it_reveals_a_lease(secured: Harness) -> None:
    secured.heartbeat.Register(
        hb.RegisterRequest(node=spec("gpu-1"), boot_id="b1"), timeout=5, metadata=_as("node")
    )
    assert _enqueue(secured, "sched", "sched-1") is None  # assigned at once: a lease with a fencing token

    request = qpb.AssignmentsRequest(scheduler_id="sched-1")
    with pytest.raises(grpc.RpcError) as err:
        for _ in secured.queue.Assignments(request, timeout=2, metadata=_as("pool")):
            pytest.fail("another scheduler's assignment was streamed")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(err.value) == "SCHEDULER_BINDING"
    mine = next(iter(secured.queue.Assignments(request, timeout=2, metadata=_as("sched"))))
    assert mine.lease.node_id == "gpu-1" and mine.lease.fencing_token


def test_audit_names_the_token_holder(secured: Harness) -> None:
    request = fpb.SetFlagRequest(node_id="gpu-9", kind=flag_pb2.FLAG_KIND_FREEZE)
    flag = secured.flags.SetFlag(request, timeout=5, metadata=_as("admin")).flag
    changes = secured.flags.ListFlagChanges(
        fpb.ListFlagChangesRequest(), timeout=5, metadata=_as("reader")
    ).changes
    assert flag.actor == "alice" and changes[0].actor == "alice"


def test_rate_limit_per_identity(secured: Harness) -> None:
    codes = [
        _code(lambda: secured.nodes.ListNodes(ns.ListNodesRequest(), timeout=5, metadata=_as("slow")))
        for _ in range(4)
    ]
    assert codes[:2] == [grpc.StatusCode.OK] * 2
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[2:]
    # Another identity is not affected.
    assert (
        _code(lambda: secured.nodes.ListNodes(ns.ListNodesRequest(), timeout=5, metadata=_as("reader")))
        == grpc.StatusCode.OK
    )


def test_health_needs_no_token(secured: Harness) -> None:
    status = (
        health_pb2_grpc.HealthStub(secured.channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    )
    assert status == health_pb2.HealthCheckResponse.SERVING


def _tls_server(redis_url: str, files: certs.Files, *, mutual: bool) -> LivestateServer:
    config = Config(
        listen="127.0.0.1:0",
        redis_url=redis_url,
        tls_cert=str(files.server_cert),
        tls_key=str(files.server_key),
        tls_ca=str(files.ca) if mutual else None,
        auth_tokens=_table(),
    )
    server = LivestateServer(config)
    server.start()
    return server


def _health_over(channel: grpc.Channel) -> grpc.StatusCode:
    return _code(
        lambda: health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    )


def test_tls_handshake_and_tokens_over_it(redis_url: str, redis_client: object, tmp_path: Path) -> None:
    files = certs.make(tmp_path)
    server = _tls_server(redis_url, files, mutual=False)
    try:
        target = f"localhost:{server.port}"
        creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=files.ca.read_bytes()),
            grpc.access_token_call_credentials("admin"),
        )
        with grpc.secure_channel(target, creds) as channel:
            assert _health_over(channel) == grpc.StatusCode.OK
            stub = node_service_pb2_grpc.NodeServiceStub(channel)
            assert _code(lambda: stub.ListNodes(ns.ListNodesRequest(), timeout=5)) == grpc.StatusCode.OK
        with grpc.insecure_channel(target) as plain:
            assert _health_over(plain) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=0)


def test_mutual_tls_requires_a_client_certificate(
    redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    files = certs.make(tmp_path)
    server = _tls_server(redis_url, files, mutual=True)
    try:
        target = f"localhost:{server.port}"
        anonymous = grpc.ssl_channel_credentials(root_certificates=files.ca.read_bytes())
        with grpc.secure_channel(target, anonymous) as channel:
            assert _health_over(channel) == grpc.StatusCode.UNAVAILABLE
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=files.ca.read_bytes(),
            private_key=files.client_key.read_bytes(),
            certificate_chain=files.client_cert.read_bytes(),
        )
        with grpc.secure_channel(target, with_cert) as channel:
            assert _health_over(channel) == grpc.StatusCode.OK
    finally:
        server.stop(grace=0)


def test_refuses_to_listen_beyond_loopback_unprotected(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        LivestateServer(Config(listen="0.0.0.0:0", redis_url=redis_url))
    with pytest.raises(ConfigError, match="--insecure"):
        LivestateServer(Config(listen="0.0.0.0:0", redis_url=redis_url, auth_tokens=_table()))


def test_insecure_listen_is_allowed_but_logged(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    server = LivestateServer(Config(listen="0.0.0.0:0", redis_url=redis_url, insecure=True))
    try:
        assert any("without auth and TLS" in r.getMessage() for r in caplog.records)
    finally:
        server.stop(grace=0)


def test_bad_token_table_is_a_config_error(redis_url: str) -> None:
    bad = json.dumps({"tokens": [{"name": "x", "role": "root", "sha256": "0" * 64}]})
    with pytest.raises(ConfigError, match="role"):
        LivestateServer(Config(listen="127.0.0.1:0", redis_url=redis_url, auth_tokens=bad))


@pytest.mark.parametrize(
    "binding",
    [
        {"role": "reader", "scheduler_id": "sched-1"},  # only a scheduler token is bound to one
        {"role": "scheduler", "scheduler_id": "has space"},
        {"role": "scheduler", "scheduler_id": 7},
        {"role": "scheduler", "scheduler_ids": "sched-1"},
        {"role": "scheduler", "scheduler_ids": []},
        {"role": "scheduler", "scheduler_ids": ["ok", ""]},
        {"role": "scheduler", "scheduler_id": "a", "scheduler_ids": ["b"]},
    ],
)
def test_bad_scheduler_binding_is_a_config_error(redis_url: str, binding: dict[str, Any]) -> None:
    bad = json.dumps({"tokens": [{"name": "x", "sha256": "0" * 64, **binding}]})
    with pytest.raises(ConfigError, match="scheduler_id"):
        LivestateServer(Config(listen="127.0.0.1:0", redis_url=redis_url, auth_tokens=bad))
