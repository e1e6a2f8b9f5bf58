"""QueueService and Match with wait: priority channels, assignment in the script that frees the
slot, delivery to schedulers that come and go, cancel, ttl."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from conftest import ServerFactory
from harness import BUSY, Harness, Stream, error_field, wait_for
from harness import enqueue as _enqueue
from livestate.server.api import match_servicer
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import queue_service_pb2 as qpb


@pytest.fixture
def stream(ls: Harness) -> Iterator[Stream]:
    s = Stream(ls)
    yield s
    s.close()


def test_enqueued_job_is_assigned_when_a_node_registers(ls: Harness, stream: Stream) -> None:
    assert _enqueue(ls, "job-1", regions=["eu-west"]).position == 0

    ls.register("gpu-1")

    got = stream.next()
    assert (got.job_id, got.lease.node_id, got.node.spec.node_id) == ("job-1", "gpu-1", "gpu-1")
    assert got.lease.fencing_token > 0


def test_job_enqueued_while_a_node_is_idle_is_assigned_at_once(ls: Harness, stream: Stream) -> None:
    ls.register("gpu-1")

    assert _enqueue(ls, "job-1").position == 0

    assert stream.next().lease.node_id == "gpu-1"


def test_higher_priority_is_served_first_then_fifo(ls: Harness, stream: Stream) -> None:
    ls.register("gpu-1")
    busy = ls.match("occupier").lease
    _enqueue(ls, "low-1", priority=1)
    _enqueue(ls, "low-2", priority=1)
    _enqueue(ls, "high", priority=5)
    queued = ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5)
    assert queued.waiting_jobs == 3
    assert [(d.priority, d.waiting_jobs) for d in queued.depths] == [(5, 1), (1, 2)]

    order = []
    lease = busy
    for _ in range(3):
        ls.release(lease)
        got = stream.next()
        order.append(got.job_id)
        lease = got.lease

    assert order == ["high", "low-1", "low-2"]


def test_match_with_wait_is_woken_when_a_slot_frees(ls: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The waiter's fallback re-read comes only after a minute, and its own deadline (10 s) after
    # the join below gives up: only the wake-up of the release can answer it in time.
    monkeypatch.setattr(match_servicer, "POLL", 60.0)
    ls.register("gpu-1")
    busy = ls.match("occupier").lease
    result: dict[str, Any] = {}

    def waiter() -> None:
        result["lease"] = ls.match("waiting-job", wait={"seconds": 60}).lease

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for(
        lambda: ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5).waiting_jobs
    )
    ls.release(busy)
    thread.join(timeout=5)

    assert result["lease"].node_id == "gpu-1"


def test_a_waiting_match_is_woken_by_a_plain_match_of_its_job_elsewhere(
    ls: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain Match publishes nothing unless a copy of its job waits: this one does (in "eu",
    which has no node), and is woken with the lease the plain Match got in "us"."""
    monkeypatch.setattr(match_servicer, "POLL", 60.0)  # only the wake-up can answer in time
    ls.register("eu-busy", region="eu")
    occupier = ls.match("occupier", regions=["eu"]).lease
    result: dict[str, Any] = {}

    def waiter() -> None:
        result["lease"] = ls.match("job-1", regions=["eu"], wait={"seconds": 60}).lease

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for(
        lambda: ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5).waiting_jobs
    )
    ls.register("us-1", region="us")
    plain = ls.match("job-1", regions=["us"]).lease
    thread.join(timeout=5)

    assert result["lease"].lease_id == plain.lease_id
    ls.release(occupier)


def test_match_wait_expires_and_the_job_leaves_the_channel(ls: Harness) -> None:
    ls.register("gpu-1")
    ls.match("occupier")

    with pytest.raises(grpc.RpcError) as err:
        ls.match("impatient", wait={"nanos": 300_000_000})

    # The server's answer (its wait ran out), not the client's deadline.
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "within wait" in str(err.value.details())
    assert ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5).waiting_jobs == 0


def test_slot_freed_by_a_beat_turning_idle_goes_to_the_waiting_job(ls: Harness, stream: Stream) -> None:
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=1, state=BUSY)
    _enqueue(ls, "job-1")

    ls.beat("gpu-1", boot, seq=2)  # IDLE

    assert stream.next().job_id == "job-1"


def test_expired_lease_hands_its_slot_to_the_waiting_job(ls: Harness, stream: Stream) -> None:
    boot, _ = ls.register("gpu-1")
    ls.match("short", lease_ttl={"nanos": 300_000_000})
    _enqueue(ls, "next")

    with ls.beating({"gpu-1": boot}):
        assert stream.next(timeout=4).job_id == "next"


def test_job_for_any_region_of_an_env_without_nodes_cannot_wait(ls: Harness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _enqueue(ls, "job-1")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_takes_a_waiting_job_out(ls: Harness) -> None:
    _enqueue(ls, "job-1", regions=["eu-west"])

    ls.queue.Cancel(qpb.CancelRequest(job_id="job-1"), timeout=5)

    assert ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5).waiting_jobs == 0
    with pytest.raises(grpc.RpcError) as err:
        ls.queue.Cancel(qpb.CancelRequest(job_id="job-1"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    ls.register("gpu-1")
    assert ls.get("gpu-1").leased_slots == 0  # the cancelled job was not assigned


def test_cancel_of_an_assigned_job_is_refused(ls: Harness) -> None:
    ls.register("gpu-1")
    _enqueue(ls, "job-1")

    with pytest.raises(grpc.RpcError) as err:
        ls.queue.Cancel(qpb.CancelRequest(job_id="job-1"), timeout=5)

    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_job_stops_waiting_after_its_ttl(ls: Harness) -> None:
    _enqueue(ls, "job-1", ttl={"nanos": 300_000_000}, regions=["eu-west"])

    wait_for(
        lambda: (
            ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5).waiting_jobs
            == 0
        ),
        timeout=3,
    )
    ls.register("gpu-1")
    assert ls.get("gpu-1").leased_slots == 0


def test_assignment_waits_for_a_disconnected_scheduler_and_is_replayed(ls: Harness) -> None:
    _enqueue(ls, "job-1", scheduler_id="sched-b", regions=["eu-west"])
    ls.register("gpu-1")  # assigned while sched-b has no stream

    first = Stream(ls, "sched-b")
    try:
        got = first.next()
    finally:
        first.close()
    assert got.job_id == "job-1"

    again = Stream(ls, "sched-b")  # not taken up yet: replayed
    try:
        assert again.next().lease.lease_id == got.lease.lease_id
        ls.match_stub.Renew(
            mpb.RenewRequest(lease_id=got.lease.lease_id, fencing_token=got.lease.fencing_token), timeout=5
        )
    finally:
        again.close()

    third = Stream(ls, "sched-b")  # taken up: no more replays
    try:
        with pytest.raises(queue.Empty):
            third.next(timeout=0.5)
    finally:
        third.close()


def test_untaken_assignment_is_released_after_the_jobs_ttl(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1", slots=1)
    with ls.beating({"gpu-1": boot}):
        _enqueue(
            ls,
            "job-1",
            scheduler_id="nobody-listens",
            ttl={"nanos": 500_000_000},
            lease_ttl={"nanos": 100_000_000},
        )
        assert ls.get("gpu-1").leased_slots == 1
        wait_for(lambda: ls.get("gpu-1").leased_slots == 0, timeout=3)


def test_job_waiting_in_several_regions_is_assigned_once(ls: Harness, stream: Stream) -> None:
    boots = {}
    for region in ("eu", "us"):
        boots[region], _ = ls.register(f"{region}-1", region=region)
        ls.beat(f"{region}-1", boots[region], seq=1, state=BUSY)
    _enqueue(ls, "job-1")  # any region: waits in both partitions

    ls.beat("eu-1", boots["eu"], seq=2)
    ls.beat("us-1", boots["us"], seq=2)

    assert stream.next().job_id == "job-1"
    with pytest.raises(queue.Empty):
        stream.next(timeout=0.5)
    assert ls.get("eu-1").leased_slots + ls.get("us-1").leased_slots == 1


def test_get_and_list_queues_report_idle_nodes_waiting_jobs_and_oldest_wait(ls: Harness) -> None:
    ls.register("gpu-1", models=["llama-3-8b"])
    ls.register("gpu-2", models=["llama-3-8b"])
    _enqueue(ls, "m-1", model="mistral-7b", priority=3, regions=["eu-west"])
    time.sleep(0.05)

    llama = ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5)
    mistral = ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="mistral-7b"), timeout=5)
    listed = ls.queue.ListQueues(qpb.ListQueuesRequest(env="test"), timeout=5).queues

    assert (llama.idle_nodes, llama.waiting_jobs) == (2, 0)
    assert (mistral.idle_nodes, mistral.waiting_jobs) == (0, 1)
    assert mistral.oldest_wait.ToMilliseconds() >= 50
    assert [(d.priority, d.waiting_jobs) for d in mistral.depths] == [(3, 1)]
    assert {(q.model, q.idle_nodes, q.waiting_jobs) for q in listed} == {
        ("llama-3-8b", 2, 0),
        ("mistral-7b", 0, 1),
    }


def test_waiting_matches_are_bounded(make_server: ServerFactory) -> None:
    ls = make_server(max_waiting_matches=1)
    ls.register("gpu-1")
    ls.match("occupier")
    codes: list[grpc.StatusCode] = []

    def waiter() -> None:
        try:
            ls.match("w1", wait={"seconds": 1})
        except grpc.RpcError as err:
            codes.append(err.code())

    first = threading.Thread(target=waiter)
    first.start()
    wait_for(
        lambda: ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b"), timeout=5).waiting_jobs
    )

    with pytest.raises(grpc.RpcError) as err:
        ls.match("w2", wait={"seconds": 1})

    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.join()
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"scheduler_id": ""}, "scheduler_id"),
        ({"priority": 1001}, "priority"),
        ({"ttl": {"seconds": -1}}, "ttl"),
        ({"ttl": {"seconds": 10**7}}, "ttl"),
        ({"model": ""}, "model"),
    ],
)
def test_enqueue_rejects_bad_input(ls: Harness, request_fields: dict[str, Any], field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _enqueue(ls, "job-1", regions=["eu-west"], **request_fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == field


def test_node_becoming_eligible_without_a_slot_freeing_serves_the_waiting_job(
    make_server: ServerFactory,
) -> None:
    ls = make_server(
        cooldown_score=0.5, cooldown_ttl=0.5, heartbeat_interval=5, suspect_after=30, offline_after=60
    )
    ls.register("gpu-1")
    ls.fail(ls.match("bad-run").lease)  # COOLDOWN: the node stays idle but unmatchable for 0.5 s
    stream = Stream(ls)
    try:
        _enqueue(ls, "job-1", regions=["eu-west"])

        assert stream.next(timeout=3).lease.node_id == "gpu-1"  # handed over once the flag lapsed
    finally:
        stream.close()
