"""Fail: auto-retry away from failed nodes, decaying failure scores, automatic COOLDOWN/QUARANTINE."""

from __future__ import annotations

import grpc
import pytest

from conftest import ServerFactory
from harness import Harness, wait_for
from livestate.v1 import flag_pb2
from livestate.v1 import flag_service_pb2 as fpb


def test_failed_job_never_returns_to_the_node_it_failed_on(ls: Harness) -> None:
    for i in range(3):
        ls.register(f"n{i}")

    seen = []
    for attempt in range(1, 4):
        lease = ls.match("job").lease
        seen.append(lease.node_id)
        assert ls.fail(lease, reason=f"crash {attempt}").attempts == attempt

    assert sorted(seen) == ["n0", "n1", "n2"]
    with pytest.raises(grpc.RpcError) as err:
        ls.match("job")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Other jobs may still use those nodes.
    assert ls.match("other-job").lease.node_id in seen


def test_tried_nodes_are_skipped_by_every_server(make_server: ServerFactory) -> None:
    a, b = make_server(), make_server()
    a.register("n0")
    a.register("n1")

    first = a.match("job").lease
    a.fail(first)

    assert b.match("job").lease.node_id != first.node_id


def _kinds(ls: Harness, node_id: str) -> set[int]:
    return {f.kind for f in ls.get(node_id).flags}


def test_failure_score_crosses_thresholds_and_flags_expire(make_server: ServerFactory) -> None:
    # Scores decay from the moment they rise: two quick failures make 1.99..., not 2.
    ls = make_server(
        cooldown_score=1.9,
        cooldown_ttl=0.6,
        quarantine_score=2.9,
        quarantine_ttl=1.2,
        failure_half_life=600,
        heartbeat_interval=5,
        suspect_after=30,
        offline_after=60,
    )
    ls.register("flaky")

    ls.fail(ls.match("j1").lease)
    assert _kinds(ls, "flaky") == set()
    ls.fail(ls.match("j2").lease)

    (cooldown,) = ls.get("flaky").flags
    assert cooldown.kind == flag_pb2.FLAG_KIND_COOLDOWN
    assert (cooldown.reason, cooldown.actor) == ("failure_score", "livestate")
    assert cooldown.expire_time.ToMilliseconds() > 0
    assert 1.9 < ls.get("flaky").failure_score <= 2.0
    with pytest.raises(grpc.RpcError) as err:
        ls.match("j3")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    wait_for(lambda: _kinds(ls, "flaky") == set(), timeout=2)
    ls.fail(ls.match("j4").lease)  # score ~3

    assert flag_pb2.FLAG_KIND_QUARANTINE in _kinds(ls, "flaky")
    audit = ls.flags.ListFlagChanges(fpb.ListFlagChangesRequest(node_id="flaky"), timeout=5).changes
    assert [(c.kind, c.actor, c.reason) for c in audit] == [
        (flag_pb2.FLAG_KIND_QUARANTINE, "livestate", "failure_score"),
        (flag_pb2.FLAG_KIND_COOLDOWN, "livestate", "failure_score"),
    ]
    assert audit[0].expire_time.ToMilliseconds() > audit[0].change_time.ToMilliseconds()
    assert any(e["type"] == "4" and "kind=4" in e["detail"] for e in ls.events())
    wait_for(lambda: ls.try_match("j5") == "flaky", timeout=3)


def test_failure_score_decays_with_its_half_life(make_server: ServerFactory) -> None:
    ls = make_server(failure_half_life=0.2)
    ls.register("gpu-1")
    ls.fail(ls.match("j1").lease)

    wait_for(lambda: ls.get("gpu-1").failure_score < 0.1, timeout=3)


def test_release_does_not_score_the_node(ls: Harness) -> None:
    ls.register("gpu-1")
    ls.release(ls.match("j1").lease)
    assert ls.get("gpu-1").failure_score == 0
