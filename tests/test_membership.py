"""Granted subcloud membership: a node cannot put itself into a subcloud whose membership is
granted; an administrator grants and revokes it, audited, and a revocation holds for every Match
that starts after it, whatever registrations race it."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from conftest import ServerFactory
from harness import Harness, error_field, error_reason, spec, wait_for
from livestate.server.api.auth import hash_token
from livestate.server.domain import membership
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import node_service_pb2 as ns
from livestate.v1 import queue_service_pb2 as qpb
from livestate.v1 import subcloud_service_pb2 as spb

OPEN, GRANTED = spb.SUBCLOUD_MEMBERSHIP_OPEN, spb.SUBCLOUD_MEMBERSHIP_GRANTED


def _grant(ls: Harness, name: str, *nodes: str, reason: str = "") -> int:
    request = spb.AddSubcloudMembersRequest(subcloud=name, node_ids=nodes, reason=reason)
    added: int = ls.subclouds.AddSubcloudMembers(request, timeout=5).added
    return added


def _revoke(ls: Harness, name: str, *nodes: str) -> int:
    request = spb.RemoveSubcloudMembersRequest(subcloud=name, node_ids=nodes)
    removed: int = ls.subclouds.RemoveSubcloudMembers(request, timeout=5).removed
    return removed


def _members(ls: Harness, name: str) -> list[str]:
    page = ls.subclouds.ListSubcloudMembers(spb.ListSubcloudMembersRequest(subcloud=name), timeout=5)
    return [m.node_id for m in page.members]


def _log(ls: Harness, **filters: Any) -> list[spb.MembershipChange]:
    request = spb.ListMembershipChangesRequest(**filters)
    return list(ls.subclouds.ListMembershipChanges(request, timeout=5).changes)


def _acme_node(ls: Harness, job: str) -> str | None:
    """The node a Match for acme picks (its lease released at once), or None."""
    try:
        lease = ls.match(job, subcloud="acme").lease
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None
    try:
        ls.release(lease)
    except grpc.RpcError as err:  # the node moved region meanwhile: its leases there ended
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
    return lease.node_id


def test_a_node_token_cannot_put_its_node_into_an_isolated_subcloud(make_server: ServerFactory) -> None:
    tokens = {
        "admin-t": {"name": "alice", "role": "admin"},
        "sched-t": {"name": "sched-1", "role": "scheduler"},
        "node-t": {"name": "gpu-1-agent", "role": "node", "node_id": "gpu-1"},
    }
    table = {"tokens": [{**entry, "sha256": hash_token(t)} for t, entry in tokens.items()]}
    ls = make_server(auth_tokens=json.dumps(table))

    def as_(token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    acme = spb.Subcloud(name="acme", isolate=True)
    ls.subclouds.PutSubcloud(spb.PutSubcloudRequest(subcloud=acme), timeout=5, metadata=as_("admin-t"))
    registered = ls.heartbeat.Register(
        hb.RegisterRequest(node=spec("gpu-1", subclouds=["acme"]), boot_id="b1"),
        timeout=5,
        metadata=as_("node-t"),
    )

    def match(job: str, **fields: Any) -> grpc.StatusCode:
        request = mpb.MatchRequest(job_id=job, env="test", model="llama-3-8b", **fields)
        try:
            ls.match_stub.Match(request, timeout=5, metadata=as_("sched-t"))
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()
            return code
        return grpc.StatusCode.OK

    assert list(registered.node.spec.subclouds) == ["acme"]
    assert list(registered.node.subclouds) == []
    listed = ls.nodes.ListNodes(ns.ListNodesRequest(subcloud="acme"), timeout=5, metadata=as_("admin-t"))
    assert list(listed.nodes) == []
    assert match("acme-job", subcloud="acme") == grpc.StatusCode.NOT_FOUND
    # Not a member, so not isolated either: it serves everyone else.
    assert match("public-job") == grpc.StatusCode.OK
    log = ls.subclouds.ListMembershipChanges(
        spb.ListMembershipChangesRequest(subcloud="acme"), timeout=5, metadata=as_("admin-t")
    )
    refused = [(c.node_id, c.action, c.actor) for c in log.changes]
    assert refused == [("gpu-1", spb.MEMBERSHIP_ACTION_REFUSED, "gpu-1-agent")]
    # Only an administrator grants.
    with pytest.raises(grpc.RpcError) as err:
        ls.subclouds.AddSubcloudMembers(
            spb.AddSubcloudMembersRequest(subcloud="acme", node_ids=["gpu-1"]),
            timeout=5,
            metadata=as_("node-t"),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_granted_revoked_and_granted_again(ls: Harness) -> None:
    ls.register("n1", subclouds=["acme"])
    stored = ls.put_subcloud("acme", isolate=True)
    assert stored.membership == GRANTED
    assert _acme_node(ls, "j0") is None

    assert _grant(ls, "acme", "n1", reason="contract 42") == 1
    assert _acme_node(ls, "j1") == "n1"
    assert list(ls.get("n1").subclouds) == ["acme"]
    assert ls.try_match("public") is None  # a member now: isolated from other jobs

    assert _revoke(ls, "acme", "n1") == 1
    assert _acme_node(ls, "j2") is None
    assert list(ls.get("n1").subclouds) == []
    assert _members(ls, "acme") == []

    assert _grant(ls, "acme", "n1") == 1
    assert _acme_node(ls, "j3") == "n1"
    assert _members(ls, "acme") == ["n1"]
    actions = [(c.action, c.actor, c.reason) for c in _log(ls, subcloud="acme", node_id="n1")]
    assert actions == [
        (spb.MEMBERSHIP_ACTION_GRANT, "anonymous", ""),
        (spb.MEMBERSHIP_ACTION_REVOKE, "anonymous", ""),
        (spb.MEMBERSHIP_ACTION_GRANT, "anonymous", "contract 42"),
    ]


def test_a_grant_made_before_the_node_registers_holds_when_it_does(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    _grant(ls, "acme", "n1")

    _, registered = ls.register("n1", subclouds=["acme"])

    assert list(registered.node.subclouds) == ["acme"]
    assert _acme_node(ls, "j") == "n1"
    assert _log(ls, subcloud="acme", node_id="n1")[0].action == spb.MEMBERSHIP_ACTION_GRANT


def test_a_grant_needs_the_node_to_ask_for_the_subcloud(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    ls.register("n1")
    _grant(ls, "acme", "n1")

    assert _acme_node(ls, "j") is None
    assert list(ls.get("n1").subclouds) == []


def test_a_revocation_reaches_a_job_already_waiting(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    _grant(ls, "acme", "n1")
    ls.register("n1", subclouds=["acme"])
    held = ls.match("busy", subcloud="acme").lease
    ls.queue.Enqueue(
        qpb.EnqueueRequest(
            job_id="waiting", env="test", model="llama-3-8b", subcloud="acme", scheduler_id="s"
        ),
        timeout=5,
    )
    _revoke(ls, "acme", "n1")
    ls.release(held)  # the slot frees: the waiting job must not get it

    assert ls.try_match("public") == "n1"


@pytest.mark.parametrize(
    "policy",
    [None, {"isolate": False}, {"isolate": True, "membership": OPEN}],
    ids=["no-policy", "plain", "isolated-open"],
)
def test_open_subclouds_keep_self_declared_membership(ls: Harness, policy: dict[str, Any] | None) -> None:
    ls.register("n1", subclouds=["acme"])
    if policy is not None:
        assert ls.put_subcloud("acme", **policy).membership == OPEN

    assert _acme_node(ls, "j") == "n1"
    assert list(ls.get("n1").subclouds) == ["acme"]
    assert _log(ls) == []


def test_a_node_moving_region_keeps_its_granted_membership(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    _grant(ls, "acme", "n1")
    ls.register("n1", subclouds=["acme"])
    assert _acme_node(ls, "j0") == "n1"

    _, moved = ls.register("n1", subclouds=["acme"], region="us")

    assert moved.node.spec.region == "us" and list(moved.node.subclouds) == ["acme"]
    assert _acme_node(ls, "j1") == "n1"
    _revoke(ls, "acme", "n1")
    assert _acme_node(ls, "j2") is None


def test_a_registration_that_read_the_grant_before_a_revocation_cannot_undo_it(
    ls: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ls.put_subcloud("acme", isolate=True)
    _grant(ls, "acme", "n1")
    ls.register("n1", subclouds=["acme"])
    read = membership.grants_read
    revoked = threading.Event()

    def read_then_revoke(subclouds: Sequence[str], replies: Sequence[Any]) -> dict[str, str]:
        grants = read(subclouds, replies)
        if not revoked.is_set():
            revoked.set()
            _revoke(ls, "acme", "n1")  # completes between this read and register.lua
        return grants

    monkeypatch.setattr(membership, "grants_read", read_then_revoke)
    for region in ("eu-west", "us"):  # the same partition, then a move
        revoked.clear()
        _grant(ls, "acme", "n1")
        ls.register("n1", subclouds=["acme"], region=region)

        assert revoked.is_set()
        assert list(ls.get("n1").subclouds) == []
        assert _acme_node(ls, f"j-{region}") is None


def test_revocations_hold_while_the_node_keeps_registering(ls: Harness) -> None:
    """History check: a node re-registers (and moves region) without pause while its membership
    is granted and revoked; no Match that starts after a revocation returns may pick it."""
    ls.put_subcloud("acme", isolate=True)
    ls.register("n1", subclouds=["acme"])
    stop = threading.Event()
    errors: list[BaseException] = []

    def registering() -> None:
        for region in itertools.cycle(["eu-west", "eu-west", "us"]):
            if stop.is_set():
                return
            try:
                ls.register("n1", boot_id="boot", subclouds=["acme"], region=region)
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=registering, daemon=True)
    thread.start()
    jobs = itertools.count()
    wrong, granted_matches = [], 0
    try:
        for _ in range(25):
            _grant(ls, "acme", "n1")
            # Granted: a Match finds it once it sits in a partition (it moves meanwhile).
            wait_for(lambda: _acme_node(ls, f"g{next(jobs)}") == "n1", timeout=5)
            granted_matches += 1
            _revoke(ls, "acme", "n1")
            for _ in range(5):
                job = f"r{next(jobs)}"
                if _acme_node(ls, job) is not None:
                    wrong.append(job)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert not errors
    assert granted_matches == 25
    assert wrong == []


@pytest.mark.single_redis
def test_a_partition_that_lost_its_data_gets_the_grants_back_from_their_record(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    _grant(ls, "acme", "n1")
    ls.register("n1", subclouds=["acme"])
    tagged = list(ls.redis.scan_iter(match="*{test/eu-west/0}*"))
    ls.redis.delete(*tagged)

    _, registered = ls.register("n1", subclouds=["acme"])

    assert list(registered.node.subclouds) == ["acme"]
    assert _acme_node(ls, "j") == "n1"


@pytest.mark.single_redis
def test_a_wiped_redis_loses_the_grants_and_fails_closed(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    _grant(ls, "acme", "n1")
    ls.register("n1", subclouds=["acme"])
    assert _acme_node(ls, "j0") == "n1"

    ls.redis.flushall()
    ls.put_subcloud("acme", isolate=True)  # the administrator puts the policy back from their records
    again = wait_for(lambda: _registered(ls, "n1"))

    assert again is not None and list(again[1].node.subclouds) == []
    assert _acme_node(ls, "j1") is None
    _grant(ls, "acme", "n1")
    assert _acme_node(ls, "j2") == "n1"


def _registered(ls: Harness, node_id: str) -> tuple[str, hb.RegisterResponse] | None:
    """Registers as an agent does after a wipe (told to resync); None while Redis is not back."""
    try:
        return ls.register(node_id, subclouds=["acme"])
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return None


def test_a_policy_put_after_nodes_claimed_it_holds_at_once_on_every_server(
    make_server: ServerFactory,
) -> None:
    a = make_server(subcloud_cache_ttl=3600)
    b = make_server(subcloud_cache_ttl=3600)
    a.register("n1", subclouds=["acme"])
    assert b.try_match("warm-the-cache") == "n1"  # b has read the (empty) policies
    b.release(b.match("warm-the-cache").lease)

    a.put_subcloud("acme", isolate=True)

    assert _acme_node(b, "j") is None


def test_bad_membership_requests_name_the_field(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    stub = ls.subclouds
    cases: list[tuple[Any, Any, str]] = [
        (stub.AddSubcloudMembers, spb.AddSubcloudMembersRequest(subcloud="acme"), "node_ids"),
        (stub.AddSubcloudMembers, spb.AddSubcloudMembersRequest(node_ids=["n1"]), "subcloud"),
        (
            stub.AddSubcloudMembers,
            spb.AddSubcloudMembersRequest(subcloud="acme", node_ids=["n1", "bad id"]),
            "node_ids[1]",
        ),
        (
            stub.RemoveSubcloudMembers,
            spb.RemoveSubcloudMembersRequest(subcloud="acme", node_ids=["n1", "n1"]),
            "node_ids",
        ),
        (
            stub.ListSubcloudMembers,
            spb.ListSubcloudMembersRequest(subcloud="acme", page_token="%%"),
            "page_token",
        ),
        (stub.ListMembershipChanges, spb.ListMembershipChangesRequest(node_id="a b"), "node_id"),
        (
            stub.PutSubcloud,
            spb.PutSubcloudRequest(subcloud=spb.Subcloud(name="x", membership=7)),  # type: ignore[arg-type]
            "subcloud.membership",
        ),
    ]
    for call, request, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error_field(err.value) == field

    with pytest.raises(grpc.RpcError) as err:
        stub.AddSubcloudMembers(spb.AddSubcloudMembersRequest(subcloud="nope", node_ids=["n1"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "SUBCLOUD_NOT_FOUND"
    assert _members(ls, "acme") == []


def test_members_are_listed_page_by_page(ls: Harness) -> None:
    ls.put_subcloud("acme", isolate=True)
    nodes = [f"n{i:03d}" for i in range(25)]
    assert _grant(ls, "acme", *nodes) == 25

    seen, token = [], ""
    for _ in range(10):
        page = ls.subclouds.ListSubcloudMembers(
            spb.ListSubcloudMembersRequest(subcloud="acme", page_size=10, page_token=token), timeout=5
        )
        seen += [m.node_id for m in page.members]
        token = page.next_page_token
        if not token:
            break

    assert seen == nodes
    assert _grant(ls, "acme", *nodes[:5]) == 0  # already members
