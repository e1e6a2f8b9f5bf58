"""The client helpers against the real server: Scheduler (match, hold, end, enqueue, the
Assignments iterator, retries through the service config) and Admin (flags, nodes, subclouds,
watch)."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator

import grpc
import pytest

from harness import Harness, spec, wait_for
from livestate.client import Admin, NodeAgent, QueueLost, Scheduler
from livestate.client.retries import CHANNEL_OPTIONS
from livestate.v1 import flag_pb2, flag_service_pb2, lease_pb2, node_pb2
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import match_service_pb2_grpc as mpb_grpc
from livestate.v1 import subcloud_service_pb2 as spb

ENV, MODEL = "test", "llama-3-8b"


@pytest.fixture
def scheduler(ls: Harness) -> Iterator[Scheduler]:
    with Scheduler(f"127.0.0.1:{ls.port}", "sched-helper") as made:
        yield made


@pytest.fixture
def admin(ls: Harness) -> Iterator[Admin]:
    with Admin(f"127.0.0.1:{ls.port}") as made:
        yield made


def test_a_held_lease_is_released_when_the_block_ends(ls: Harness, scheduler: Scheduler) -> None:
    ls.register("gpu-1")
    found = scheduler.match("job-1", env=ENV, model=MODEL)
    assert found is not None and found.lease.node_id == "gpu-1"
    with scheduler.holding(found.lease) as held:
        assert scheduler.match("job-2", env=ENV, model=MODEL) is None  # its one slot is taken
    assert held.outcome == "released"
    again = scheduler.match("job-2", env=ENV, model=MODEL)
    assert again is not None and again.lease.node_id == "gpu-1"


def test_a_block_that_raises_fails_the_lease_and_the_job_avoids_that_node(
    ls: Harness, scheduler: Scheduler
) -> None:
    ls.register("gpu-1")
    found = scheduler.match("job-1", env=ENV, model=MODEL)
    assert found is not None
    with pytest.raises(RuntimeError, match="oom"), scheduler.holding(found.lease) as held:
        raise RuntimeError("oom")
    assert held.outcome == "failed"
    assert scheduler.match("job-1", env=ENV, model=MODEL) is None  # not gpu-1 again
    assert scheduler.match("job-other", env=ENV, model=MODEL) is not None


@pytest.fixture
def beating(ls: Harness) -> Iterator[None]:
    """gpu-1, kept beating by a NodeAgent (a silent node goes OFFLINE and loses its leases)."""
    stop = threading.Event()
    agent = NodeAgent(f"127.0.0.1:{ls.port}", spec("gpu-1"))
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: agent.registrations > 0)
    yield
    stop.set()
    thread.join()
    agent.close()


@pytest.mark.usefixtures("beating")
def test_a_held_lease_outlives_its_ttl_while_renewed(scheduler: Scheduler) -> None:
    found = scheduler.match("job-1", env=ENV, model=MODEL, lease_ttl=1.0)
    assert found is not None
    first_expiry = found.lease.expire_time.ToNanoseconds()
    with scheduler.holding(found.lease, ttl=1.0, every=0.2) as held:
        wait_for(lambda: held.lease.expire_time.ToNanoseconds() > first_expiry + 1_500_000_000, timeout=10)
        assert not held.lost.is_set()
    assert held.outcome == "released" and held.renewals >= 1


def test_a_lease_lost_while_held_is_reported_and_not_released(ls: Harness, scheduler: Scheduler) -> None:
    boot, _ = ls.register("gpu-1")
    found = scheduler.match("job-1", env=ENV, model=MODEL)
    assert found is not None
    with scheduler.holding(found.lease, every=0.1) as held:
        ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="gpu-1", boot_id=boot), timeout=5)
        wait_for(held.lost.is_set)
    assert held.outcome == ""


def test_match_needs_a_job_id(scheduler: Scheduler) -> None:
    with pytest.raises(ValueError, match="job_id"):
        scheduler.match("", env=ENV, model=MODEL)


def test_assignments_come_as_nodes_free_up_and_stop_ends_the_iterator(
    ls: Harness, scheduler: Scheduler
) -> None:
    assert scheduler.enqueue("job-q", env=ENV, model=MODEL, regions=["eu-west"]).position == 0
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: next(iter(scheduler.assignments(stop))))
        ls.register("gpu-1")
        got = first.result(timeout=10)
        assert (got.job_id, got.lease.node_id) == ("job-q", "gpu-1")
        scheduler.release(got.lease)

        ended = pool.submit(lambda: list(scheduler.assignments(stop)))
        stop.set()
        assert ended.result(timeout=5) == []


def test_assignments_report_a_lost_queue_and_go_on(ls: Harness, scheduler: Scheduler) -> None:
    scheduler.enqueue("job-lost", env=ENV, model="no-node-has-it", regions=["eu-west"])
    ls.redis.flushdb()
    with pytest.raises(QueueLost):
        next(iter(scheduler.assignments()))

    lost: list[QueueLost] = []
    stop = threading.Event()
    scheduler.known_epoch = 1  # as a scheduler that enqueued before the wipe
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: next(iter(scheduler.assignments(stop, on_lost=lost.append))))
        wait_for(lambda: lost)
        scheduler.enqueue("job-again", env=ENV, model=MODEL, regions=["eu-west"])
        ls.register("gpu-1")
        assert first.result(timeout=10).job_id == "job-again"
    assert lost[0].epoch == scheduler.known_epoch


class _FlakyMatch(mpb_grpc.MatchServiceServicer):
    """UNAVAILABLE on the first attempt of every job, then a lease: what a retry must look like."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def Match(self, request: mpb.MatchRequest, context: grpc.ServicerContext) -> mpb.MatchResponse:
        self.attempts.append(request.job_id)
        if self.attempts.count(request.job_id) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "redis is failing over")
        return mpb.MatchResponse(lease=lease_pb2.Lease(job_id=request.job_id, lease_id="p/1"))


def test_a_match_is_retried_on_unavailable_with_the_same_job_id() -> None:
    flaky = _FlakyMatch()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    mpb_grpc.add_MatchServiceServicer_to_server(flaky, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Scheduler(f"127.0.0.1:{port}", "sched-retry") as scheduler:
            found = scheduler.match("job-r", env=ENV, model=MODEL)
        assert found is not None and found.lease.job_id == "job-r"
        assert flaky.attempts == ["job-r", "job-r"]
        # A plain channel without the service config would have failed the call.
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_retries", 0)]) as plain:
            with pytest.raises(grpc.RpcError) as failed:
                mpb_grpc.MatchServiceStub(plain).Match(mpb.MatchRequest(job_id="job-s"), timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(CHANNEL_OPTIONS)["grpc.enable_retries"] == 1
    finally:
        server.stop(0)


def test_admin_flags_nodes_and_subclouds(ls: Harness, admin: Admin) -> None:
    for i in range(3):
        ls.register(f"gpu-{i}")
    flag = admin.set_flag("gpu-1", flag_pb2.FLAG_KIND_PAUSE, ttl=600, reason="thermal", message="cooling")
    assert flag.kind == flag_pb2.FLAG_KIND_PAUSE
    assert [(f.node_id, f.kind) for f in admin.flags()] == [("gpu-1", flag_pb2.FLAG_KIND_PAUSE)]
    assert admin.clear_flag("gpu-1", flag_pb2.FLAG_KIND_PAUSE)
    assert list(admin.flags()) == []
    actions = [c.action for c in admin.flag_changes("gpu-1")][:2]
    assert actions == [flag_service_pb2.FLAG_ACTION_CLEAR, flag_service_pb2.FLAG_ACTION_SET]

    assert sorted(n.spec.node_id for n in admin.nodes(env=ENV)) == ["gpu-0", "gpu-1", "gpu-2"]
    node = admin.node("gpu-2")
    assert node is not None and node.liveness == node_pb2.LIVENESS_ONLINE
    assert admin.node("gpu-none") is None
    assert sum(c.online_nodes for c in admin.count_nodes(env=ENV)) == 3

    admin.put_subcloud(spb.Subcloud(name="eu-only", allowed_regions=["eu-west"]))
    got = admin.subcloud("eu-only")
    assert got is not None and list(got.allowed_regions) == ["eu-west"]
    assert [s.name for s in admin.subclouds()] == ["eu-only"]
    assert admin.delete_subcloud("eu-only")
    assert admin.subcloud("eu-only") is None


def test_admin_watch_yields_events_and_ends_on_stop(ls: Harness, admin: Admin) -> None:
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        events = admin.watch(env=ENV, types=[node_pb2.NODE_EVENT_TYPE_ONLINE], stop=stop)
        first = pool.submit(lambda: next(events))
        # The watch may open after a registration; keep registering new nodes until one is seen.
        i = 0

        def seen() -> bool:
            nonlocal i
            i += 1
            ls.register(f"gpu-w{i}")
            return first.done()

        wait_for(seen, timeout=10, interval=0.2)
        assert first.result().node_id.startswith("gpu-w")
        stop.set()
        assert list(events) == []


def test_a_match_that_waited_in_vain_is_none(ls: Harness, scheduler: Scheduler) -> None:
    ls.register("gpu-1")
    assert scheduler.match("job-1", env=ENV, model=MODEL) is not None
    assert scheduler.match("job-2", env=ENV, model=MODEL, wait=0.3) is None
    # The server ends the wait within the call's deadline too: still "none freed up", not an error.
    assert scheduler.match("job-3", env=ENV, model=MODEL, wait=5.0, timeout=0.5) is None
