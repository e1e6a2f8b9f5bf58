"""Redis Cluster under faults: the primary that holds the load's partition killed while agents
beat and schedulers match; its replica takes over, and service is back within 5 s of that."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import cast

import grpc
import pytest
import redis
import redis.cluster

from harness import Harness, error_reason, wait_for
from livestate.server.store.keys import Partition, lease_partition
from livestate.server.store.replication import ReplicatedCluster
from livestate.v1 import lease_pb2

from .cluster import LocalCluster
from .conftest import FaultServerFactory, server_factory
from .history import STATE_LOST, History
from .load import ENV, REGION, WAITING, Agents, LeaseTable, QueueScheduler, probe_match, steady_load, target
from .redisproc import RedisProc, all_frozen

AGENTS = 30
INTERVAL = 0.5


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    # Two replicas a primary: with ack_replicas 1 a shard whose primary died still has a replica
    # to acknowledge writes once the other one is promoted.
    with LocalCluster(masters=3, replicas=2) as started:
        yield started


@pytest.fixture
def make_cluster_server(cluster: LocalCluster) -> Iterator[FaultServerFactory]:
    def client() -> redis.Redis:
        return cast(redis.Redis, ReplicatedCluster.from_url(cluster.url, decode_responses=True))

    yield from server_factory(client, redis_url=cluster.url, redis_cluster=True)


def _primary_of(cluster: LocalCluster, key: str) -> RedisProc:
    client = ReplicatedCluster.from_url(cluster.url, decode_responses=True)
    try:
        port = client.get_node_from_key(key).port
    finally:
        client.close()
    return next(p for p in cluster.procs if p.port == port)


TAG = f"{{{ENV}/{REGION}/0}}"


@pytest.mark.timeout(60)
def test_with_ack_replicas_a_match_is_answered_only_once_a_replica_holds_its_lease(
    cluster: LocalCluster, make_cluster_server: FaultServerFactory
) -> None:
    ls = make_cluster_server(ack_replicas=1, **WAITING)
    ls.register("gpu-1", env=ENV, region=REGION)
    replicas = cluster.replicas_of(_primary_of(cluster, TAG).port)
    with all_frozen(replicas, 0.5):
        lease = ls.match("job-1", env=ENV).lease
        answered = time.monotonic()
    # Without the WAIT the answer would come at once, before either replica thawed.
    assert answered >= min(r.thawed_at or 0.0 for r in replicas)
    key = ls.server.rt.keys.partition(lease_partition(lease.lease_id)).lease(lease.lease_id)
    assert sum(_replica_has(r, key) for r in replicas) >= 1


@pytest.mark.timeout(60)
def test_with_ack_replicas_and_the_replica_frozen_writes_fail_and_a_retry_gets_the_same_lease(
    cluster: LocalCluster, make_cluster_server: FaultServerFactory
) -> None:
    ls = make_cluster_server(ack_replicas=1, heartbeat_interval=2.0, suspect_after=30.0, offline_after=60.0)
    ls.register("gpu-1", env=ENV, region=REGION)
    replicas = cluster.replicas_of(_primary_of(cluster, TAG).port)
    for replica in replicas:
        replica.freeze()
    try:
        # On the event loop (the batcher's lane) and on a worker thread (the cluster client).
        for call in (
            lambda: ls.match("job-1", env=ENV),
            lambda: ls.register("gpu-2", env=ENV, region=REGION),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(raised.value) == "REDIS_NOT_REPLICATED", raised.value.details()
    finally:
        for replica in replicas:
            replica.thaw()
    lease = wait_for(lambda: _try_match(ls, "job-1"), timeout=10)
    assert lease is not None and lease.node_id == "gpu-1"


def _replica_has(replica: RedisProc, key: str) -> bool:
    client = replica.client()
    try:
        client.execute_command("READONLY")
        return bool(client.exists(key))
    finally:
        client.close()


def _try_match(ls: Harness, job_id: str) -> lease_pb2.Lease | None:
    try:
        return ls.match(job_id, env=ENV).lease
    except grpc.RpcError:
        return None


@pytest.mark.timeout(180)
def test_partition_primary_killed_under_load_its_replica_takes_over(
    cluster: LocalCluster, make_cluster_server: FaultServerFactory, history: History
) -> None:
    # Every answer waits for the partition primary's replica: the claim survives the kill.
    ls: Harness = make_cluster_server(
        heartbeat_interval=INTERVAL, suspect_after=3.0, offline_after=6.0, sweep_interval=0.1, ack_replicas=1
    )
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents, schedulers = steady_load(stack, ls, history, table, agents=AGENTS, interval=INTERVAL)
        victim = _primary_of(cluster, TAG)
        victim.kill()
        killed = time.monotonic()
        # Promoted: a live node names another primary for the partition's slot, cluster ok.
        wait_for(lambda: cluster.primary_port(TAG) not in (None, victim.port), timeout=30, interval=0.05)
        promoted = time.monotonic()

        new_primary = cluster.primary_port(TAG)
        assert new_primary is not None
        wait_for(lambda: bool(cluster.replicas_of(new_primary)), timeout=30, interval=0.05)
        linked = time.monotonic()
        back = probe_match(ls, history, table, "probe-job", within=5)
        schedulers.grant_more(50, timeout=15)
        schedulers.stop()
        agents.stop()

    print(
        f"cluster: partition primary killed -> replica promoted {promoted - killed:.2f}s, "
        f"its remaining replica following the new primary {linked - promoted:.2f}s after, "
        f"Match answered {back - promoted:.2f}s after the promotion"
    )
    resyncs = {node: len(times) for node, times in agents.resyncs.items() if len(times) > 1}
    assert not resyncs, f"agents told to resync more than once: {resyncs}"


WAIT_MODEL = "model-with-no-node-yet"


@pytest.mark.timeout(180)
def test_partition_shard_wiped_under_load_resyncs_its_agents_and_reports_waiting_jobs_lost(
    cluster: LocalCluster, make_cluster_server: FaultServerFactory, history: History
) -> None:
    # The global keys (the epoch among them) on another shard than the partition: only the
    # partition's own epoch can tell that its state is gone.
    victim = _primary_of(cluster, TAG)
    prefix = next(
        p for p in (f"ls{i}" for i in range(100)) if cluster.primary_port(f"{p}:epoch") != victim.port
    )
    ls: Harness = make_cluster_server(
        key_prefix=prefix,
        heartbeat_interval=INTERVAL,
        suspect_after=3.0,
        offline_after=6.0,
        sweep_interval=0.1,
    )
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents, schedulers = steady_load(stack, ls, history, table, agents=AGENTS, interval=INTERVAL)
        waiter = QueueScheduler(
            target(ls),
            history,
            "qsched-0",
            table=table,
            regions=[REGION],
            model=WAIT_MODEL,
            requeue_lost=True,
        )
        stack.enter_context(waiter)
        for i in range(5):
            assert waiter.enqueue(f"wait-{i}").ok
        old_epoch = waiter.known_epoch
        partition = Partition(ENV, REGION)
        wait_for(lambda: ls.server.rt.epoch.partition_seen(partition)[0] > 0, timeout=5)

        history.event(STATE_LOST, "test", how="partition shard flushall")
        client = victim.client()
        try:
            client.flushall()
        finally:
            client.close()
        wiped = time.monotonic()

        wait_for(lambda: waiter.losses, timeout=5, interval=0.05)
        told = time.monotonic()
        assert waiter.losses[0][1] > old_epoch
        wait_for(lambda: all(agents.resyncs.values()), timeout=10, interval=0.05)
        resynced = time.monotonic()
        back = probe_match(ls, history, table, "probe-job", within=5)
        schedulers.grant_more(50, timeout=15)
        schedulers.stop()
        agents.stop()
        # The lost jobs, enqueued again, are served once nodes for their model come.
        with Agents(target(ls), history, 2, interval=INTERVAL, prefix="waiter", models=[WAIT_MODEL]):
            wait_for(lambda: len(waiter.assigned) == 5, timeout=15)
        assert waiter.settle() == set()

    print(
        f"cluster: partition shard wiped -> scheduler told its jobs were lost {told - wiped:.2f}s, "
        f"every agent resynced {resynced - wiped:.2f}s, Match answered {back - wiped:.2f}s after"
    )
    resyncs = {node: len(times) for node, times in agents.resyncs.items() if len(times) > 1}
    assert not resyncs, f"agents told to resync more than once: {resyncs}"
