"""Sentinel mode: the master found through three sentinels, every write acknowledged by a replica
before it is answered, and a failover under load that hands no slot out twice."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from harness import Harness, error_reason, wait_for
from livestate.server.store.keys import lease_partition

from .conftest import server_factory
from .history import OK, History
from .load import WAITING, LeaseTable, probe_match, steady_load
from .redisproc import all_frozen
from .sentinel import SentinelGroup

ServerFactory = Callable[..., Harness]


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as started:
        yield started


@pytest.fixture
def make_sentinel_server(group: SentinelGroup) -> Iterator[ServerFactory]:
    yield from server_factory(lambda: group.master.client(), sentinel=group.hosts)


def _replicas_holding(group: SentinelGroup, ls: Harness, lease_id: str) -> int:
    key = ls.server.rt.keys.partition(lease_partition(lease_id)).lease(lease_id)
    held = 0
    for replica in group.replicas:
        client = replica.client()
        try:
            held += int(client.exists(key))
        finally:
            client.close()
    return held


@pytest.mark.timeout(60)
def test_a_match_is_answered_only_once_a_replica_holds_its_lease(
    group: SentinelGroup, make_sentinel_server: ServerFactory
) -> None:
    ls = make_sentinel_server(**WAITING)
    ls.register("gpu-1")
    with all_frozen(group.replicas, 0.5):
        lease = ls.match("job-1").lease
        answered = time.monotonic()
    # Without the WAIT the answer would come at once, before either replica thawed.
    assert answered >= min(r.thawed_at or 0.0 for r in group.replicas)
    assert _replicas_holding(group, ls, lease.lease_id) >= 1


@pytest.mark.timeout(60)
def test_without_replicas_writes_fail_unavailable_and_a_retry_returns_the_same_lease(
    group: SentinelGroup, make_sentinel_server: ServerFactory
) -> None:
    # Slow timings: the node must stay matchable while its beats fail for want of a replica.
    ls = make_sentinel_server(heartbeat_interval=2.0, suspect_after=30.0, offline_after=60.0)
    ls.register("gpu-1")
    for replica in group.replicas:
        replica.freeze()
    try:
        with pytest.raises(grpc.RpcError) as raised:
            ls.match("job-1")
    finally:
        for replica in group.replicas:
            replica.thaw()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(raised.value) == "REDIS_NOT_REPLICATED"
    # The claim did run on the master; the retry with the same job_id is answered with it, now
    # that a replica holds it, and no second slot is taken.
    lease = wait_for(lambda: _try(lambda: ls.match("job-1").lease), timeout=10)
    assert lease.node_id == "gpu-1"
    with pytest.raises(grpc.RpcError) as busy:
        ls.match("job-2")
    assert busy.value.code() == grpc.StatusCode.NOT_FOUND


def _try(call: Callable[[], Any]) -> Any:
    with contextlib.suppress(grpc.RpcError):
        return call()
    return None


# The sentinels call the master down after 1 s of silence; the vote and the promotion take a few
# seconds more. Service must be back within 5 s of the new master being named.
AGENTS = 30
INTERVAL = 0.5


@pytest.mark.timeout(180)
def test_master_frozen_under_load_fails_over_without_a_double_assignment(
    group: SentinelGroup, make_sentinel_server: ServerFactory, history: History
) -> None:
    ls = make_sentinel_server(
        heartbeat_interval=INTERVAL, suspect_after=3.0, offline_after=6.0, sweep_interval=0.1
    )
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents, schedulers = steady_load(stack, ls, history, table, agents=AGENTS, interval=INTERVAL)

        old = group.master_port()
        assert old == group.master.port
        group.master.freeze()
        frozen_at = time.monotonic()
        new, named_at = group.wait_failover(old)
        assert new != old

        back_at = probe_match(ls, history, table, "probe-job", within=5)

        # The old master comes back as a replica of the new one; the load carries on.
        group.master.thaw()
        schedulers.grant_more(50, timeout=15)
        schedulers.stop()
        agents.stop()

    print(
        f"failover: master silent to new master named {named_at - frozen_at:.2f}s, "
        f"to a Match answered {back_at - named_at:.2f}s after"
    )
    resyncs = {node: len(times) for node, times in agents.resyncs.items() if len(times) > 1}
    assert not resyncs, f"agents told to resync more than once: {resyncs}"
    beat_outcomes = dict(agents.outcomes)
    assert beat_outcomes.get(OK, 0) > 0, beat_outcomes
