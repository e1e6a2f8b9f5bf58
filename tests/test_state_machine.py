"""A Hypothesis state machine against the real server and Redis: random registrations, beats,
matches, releases, failures and flags, Redis wiped or restarted with its data, with the
invariants checked after every step."""

from __future__ import annotations

import uuid

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from conftest import ServerFactory
from harness import BUSY, IDLE, Harness, wait_for
from livestate.server.store.embedded import EmbeddedRedis
from livestate.v1 import flag_pb2, lease_pb2
from livestate.v1 import flag_service_pb2 as fpb

NODES = [f"n{i}" for i in range(4)]


class Cluster(RuleBasedStateMachine):
    ls: Harness
    store: EmbeddedRedis

    def __init__(self) -> None:
        super().__init__()
        self.ls.redis.flushdb()
        self.boots: dict[str, str] = {}
        self.slots: dict[str, int] = {}
        self.paused: set[str] = set()
        self.leases: dict[str, lease_pb2.Lease] = {}
        self.jobs = 0

    @rule(node=st.sampled_from(NODES), slots=st.integers(1, 3), new_boot=st.booleans())
    def register(self, node: str, slots: int, new_boot: bool) -> None:
        boot = self.boots.get(node) if not new_boot else None
        self.boots[node], _ = self.ls.register(node, boot_id=boot or uuid.uuid4().hex, slots=slots)
        if boot is None:  # a new boot drops the old boot's leases
            self.leases = {k: v for k, v in self.leases.items() if v.node_id != node}
        self.slots[node] = slots

    @rule(node=st.sampled_from(NODES), busy=st.booleans())
    def beat(self, node: str, busy: bool) -> None:
        if node in self.boots:
            self.ls.beat(node, self.boots[node], state=BUSY if busy else IDLE)

    @rule()
    def match(self) -> None:
        self.jobs += 1
        try:
            lease = self.ls.match(f"job-{self.jobs}").lease
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
            return
        assert lease.node_id not in self.paused, "matched a paused node"
        running = sum(1 for held in self.leases.values() if held.node_id == lease.node_id)
        assert running < self.slots[lease.node_id], "matched a node beyond its slots"
        self.leases[lease.lease_id] = lease

    @rule(data=st.data(), failed=st.booleans())
    def end(self, data: st.DataObject, failed: bool) -> None:
        if not self.leases:
            return
        lease_id = data.draw(st.sampled_from(sorted(self.leases)))
        lease = self.leases.pop(lease_id)
        if failed:
            self.ls.fail(lease)
        else:
            self.ls.release(lease)

    @rule(node=st.sampled_from(NODES), on=st.booleans())
    def pause(self, node: str, on: bool) -> None:
        kind = flag_pb2.FLAG_KIND_PAUSE
        if on:
            self.ls.flags.SetFlag(fpb.SetFlagRequest(node_id=node, kind=kind), timeout=5)
            self.paused.add(node)
        else:
            self.ls.flags.ClearFlag(fpb.ClearFlagRequest(node_id=node, kind=kind), timeout=5)
            self.paused.discard(node)

    @rule()
    def restart_redis_with_its_data(self) -> None:
        """kill -9 and back from its AOF: nothing acknowledged is lost, so nothing changes for
        anyone: no resync, leases and flags carry on."""
        self.store.restart()
        for node, boot in self.boots.items():
            assert not self.ls.beat(node, boot).resync_required

    @rule()
    def wipe_redis(self) -> None:
        """The state is gone: the server notices, agents register again (they run no job here:
        the schedulers lost their leases with it), flags are gone too."""
        rt = self.ls.server.rt
        epoch = rt.epoch.current
        self.ls.redis.flushall()
        wait_for(lambda: rt.epoch.current > epoch)
        for node, boot in self.boots.items():
            assert self.ls.beat(node, boot).resync_required
            self.ls.register(node, boot_id=boot, slots=self.slots[node])
        self.leases.clear()
        self.paused.clear()

    @invariant()
    def leases_are_the_ones_schedulers_hold(self) -> None:
        held: dict[str, int] = {}
        for lease in self.leases.values():
            held[lease.node_id] = held.get(lease.node_id, 0) + 1
        for node in self.boots:
            # A node that re-registers with fewer slots than it runs jobs stays over them until
            # they end (match checks that nothing new is handed to it meanwhile).
            assert self.ls.get(node).leased_slots == held.get(node, 0)

    @invariant()
    def idle_queues_hold_only_nodes_that_can_work(self) -> None:
        rt = self.ls.server.rt
        for node in self.boots:
            partition = rt.locator.lookup(node, use_cache=False)
            assert partition is not None
            pk = rt.keys.partition(partition)
            queued = self.ls.redis.zscore(pk.idle_queue("llama-3-8b"), node) is not None
            record = self.ls.get(node)
            can_work = record.state == IDLE and record.leased_slots < record.spec.slots
            assert queued == can_work, (node, queued, record.state, record.leased_slots)


@pytest.mark.single_redis
@pytest.mark.timeout(300)
def test_random_operations_keep_the_invariants(make_server: ServerFactory) -> None:
    with EmbeddedRedis(persist=True) as store:
        Cluster.store = store
        Cluster.ls = make_server(url=store.url, heartbeat_interval=5, suspect_after=60, offline_after=120)
        _run()


def _run() -> None:
    run_state_machine_as_test(
        Cluster,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
