"""Promises that must hold when a call is cut off, repeated or dies half-way, when sweeps lag, and
when Redis loses or keeps its state: one script owns each assignment, no script's effect doubles,
flags hold from the first instant, and nothing is lost without the scheduler being told."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from conftest import ServerFactory
from harness import BUSY, Harness, Stream, enqueue, error_reason, spec, wait_for
from livestate.server.domain import jobs
from livestate.server.domain.assignments import settle
from livestate.server.store.calls import Assignment
from livestate.server.store.keys import Partition, lease_partition
from livestate.v1 import flag_pb2, heartbeat_service_pb2, node_pb2
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import queue_service_pb2 as qpb

EU = Partition("test", "eu-west")


def _flag(ls: Harness, node_id: str, kind: int, **fields: Any) -> None:
    ls.flags.SetFlag(fpb.SetFlagRequest(node_id=node_id, kind=kind, **fields), timeout=5)  # type: ignore[arg-type]


def _register(ls: Harness, node_id: str, boot: str, running_jobs: int = 0, **fields: Any) -> None:
    ls.heartbeat.Register(
        heartbeat_service_pb2.RegisterRequest(
            node=spec(node_id, **fields), boot_id=boot, running_jobs=running_jobs
        ),
        timeout=5,
    )


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# -- flags hold from the first instant -------------------------------------------------------


def test_a_node_frozen_before_it_registers_is_not_handed_a_waiting_job(ls: Harness) -> None:
    _flag(ls, "late-1", flag_pb2.FLAG_KIND_FREEZE, reason="fraud")
    enqueue(ls, "job-q1", regions=["eu"])
    stream = Stream(ls)
    try:
        ls.register("late-1", region="eu")
        with pytest.raises(queue.Empty):
            stream.next(timeout=0.5)
    finally:
        stream.close()
    assert [f.kind for f in ls.get("late-1").flags] == [flag_pb2.FLAG_KIND_FREEZE]
    assert ls.try_match("job-other", regions=["eu"]) is None


def test_a_node_moving_region_carries_its_flags_and_drain_deadline(ls: Harness) -> None:
    boot, _ = ls.register("mover", region="eu")
    _flag(ls, "mover", flag_pb2.FLAG_KIND_DRAIN, drain_deadline={"seconds": 600})
    enqueue(ls, "job-us", regions=["us"])
    stream = Stream(ls)
    try:
        ls.register("mover", boot_id=boot, region="us")
        with pytest.raises(queue.Empty):
            stream.next(timeout=0.5)
    finally:
        stream.close()
    assert [f.kind for f in ls.get("mover").flags] == [flag_pb2.FLAG_KIND_DRAIN]
    drains = ls.server.rt.keys.partition(Partition("test", "us")).drains
    assert ls.redis.zscore(drains, "mover") is not None


def test_a_flag_set_while_the_node_registers_is_in_force_when_set_flag_returns(ls: Harness) -> None:
    for i in range(25):
        node_id = f"racer-{i}"
        thread = threading.Thread(target=ls.register, args=(node_id,))
        thread.start()
        _flag(ls, node_id, flag_pb2.FLAG_KIND_PAUSE)
        thread.join()
        # SetFlag has returned: whichever of the two ran first, the node is paused from now on.
        assert ls.try_match(f"race-job-{i}", exclude_node_ids=[f"racer-{j}" for j in range(i)]) is None


# -- no script's effect doubles when a call is repeated --------------------------------------


def test_a_repeated_release_answers_ok_and_frees_the_slot_once(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1", slots=2)
    with ls.beating({"gpu-1": boot}):
        first = ls.match("job-1").lease
        ls.match("job-2")
        ls.release(first)
        ls.release(first)  # its first copy ran: done, not "no such lease"
        assert ls.get("gpu-1").leased_slots == 1


def test_a_repeated_fail_scores_the_node_once(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    with ls.beating({"gpu-1": boot}):
        lease = ls.match("job-1").lease
        ls.fail(lease)
        ls.fail(lease)
        assert ls.get("gpu-1").failure_score == pytest.approx(1.0, abs=0.01)


def test_a_match_whose_first_copy_already_claimed_returns_that_lease(ls: Harness) -> None:
    """A Match cut off after its script ran (a timeout, a crash): the retry gets the claimed
    slot, not a second one."""
    rt = ls.server.rt
    boot, _ = ls.register("gpu-1", slots=2)
    with ls.beating({"gpu-1": boot}):
        spec = jobs.JobSpec("job-1", "test", "llama-3-8b", ["eu-west"], 0, [], "", {}, frozenset(), 60_000, 0)
        claimed = jobs.try_partition(rt, EU, spec, set(), scheduler="", wait_ms=0)
        assert isinstance(claimed, Assignment)
        again = ls.match("job-1", regions=["eu-west"]).lease
        assert again.lease_id == claimed.lease_id
        assert ls.get("gpu-1").leased_slots == 1


def test_the_same_job_matched_concurrently_gets_one_lease(ls: Harness) -> None:
    boots = {f"gpu-{i}": ls.register(f"gpu-{i}")[0] for i in range(4)}
    with ls.beating(boots):
        leases: list[str] = []
        threads = [
            threading.Thread(target=lambda: leases.append(ls.match("job-1").lease.lease_id)) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(leases)) == 1
        assert sum(ls.get(n).leased_slots for n in boots) == 1


# -- an assignment is written where it is made -----------------------------------------------


def test_an_assignment_whose_caller_died_after_the_claim_reaches_its_scheduler(ls: Harness) -> None:
    rt = ls.server.rt
    boot, _ = ls.register("gpu-1")
    with ls.beating({"gpu-1": boot}):
        stream = Stream(ls, "sched-a")
        try:
            spec = jobs.JobSpec("job-1", "test", "llama-3-8b", [], 0, [], "", {}, frozenset(), 60_000, 0)
            # The claim script ran; the process that ran it never got to record the assignment.
            claimed = jobs.try_partition(rt, EU, spec, set(), scheduler="sched-a", wait_ms=0)
            assert isinstance(claimed, Assignment)
            got = stream.next(timeout=ls.config.outbox_settle_after + 3)
        finally:
            stream.close()
        assert (got.job_id, got.lease.lease_id) == ("job-1", claimed.lease_id)
        assert ls.redis.hget(rt.keys.job("job-1"), "lease") == claimed.lease_id
        outbox = rt.keys.partition(EU).outbox
        wait_for(lambda: ls.redis.zcard(outbox) == 0)


# -- state lost, state kept ------------------------------------------------------------------


def test_redis_coming_back_with_the_same_data_needs_no_resync_and_keeps_leases(ls: Harness) -> None:
    rt = ls.server.rt
    boot, _ = ls.register("gpu-1")
    with ls.beating({"gpu-1": boot}):
        lease = ls.match("job-1").lease
        epoch = rt.epoch.current
        # What a restart that reloaded everything (AOF) looks like to us: a new run_id, the marker
        # where the server last saw it.
        ls.redis.hset(rt.keys.epoch, "run_id", "after-a-clean-restart")
        wait_for(lambda: ls.redis.hget(rt.keys.epoch, "run_id") != "after-a-clean-restart")
        assert rt.epoch.current == epoch
        assert not ls.beat("gpu-1", boot, seq=10**6).resync_required
        ls.match_stub.Renew(
            mpb.RenewRequest(lease_id=lease.lease_id, fencing_token=lease.fencing_token), timeout=5
        )
        assert ls.try_match("job-2") is None  # its one slot is still taken


def test_jobs_an_agent_still_runs_after_a_wipe_keep_their_slots(ls: Harness) -> None:
    boot = uuid.uuid4().hex
    _register(ls, "gpu-1", boot)
    ls.match("job-1")
    ls.redis.flushdb()
    wait_for(lambda: ls.beat("gpu-1", boot).resync_required)
    _register(ls, "gpu-1", boot, running_jobs=1)  # the agent still runs job-1
    assert ls.try_match("job-2") is None
    ls.beat("gpu-1", boot, running_jobs=0)  # job-1 finished
    assert ls.try_match("job-2") == "gpu-1"


def test_waiting_jobs_lost_in_a_wipe_are_reported_to_their_scheduler(ls: Harness) -> None:
    epoch = enqueue(ls, "job-1", regions=["eu-west"]).epoch
    assert epoch
    stream = Stream(ls, "sched-a", known_epoch=epoch)
    try:
        ls.redis.flushdb()
        wait_for(lambda: stream.error is not None)
    finally:
        stream.close()
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.ABORTED
    assert error_reason(stream.error) == "QUEUE_LOST"

    again = enqueue(ls, "job-2", regions=["eu-west"], known_epoch=epoch)
    assert again.queue_lost and again.epoch > epoch
    got = ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b", known_epoch=epoch), timeout=5)
    assert got.queue_lost
    current = ls.queue.GetQueue(qpb.GetQueueRequest(env="test", model="llama-3-8b", known_epoch=again.epoch))
    assert not current.queue_lost


# -- liveness never freezes; slots never leak ------------------------------------------------


def test_a_dead_node_turns_unmatchable_even_while_sweeps_lag(make_server: ServerFactory) -> None:
    # Sweeps every 2.5 s, far beyond the 0.3 s gap that marks an outage: before, every lagging
    # sweep counted as an outage and the silent node stayed matchable for as long as they lagged.
    ls = make_server(sweep_interval=2.5, sweep_gap=0.3)
    ls.register("silent")
    time.sleep(1.0)  # no sweep, no beat: the first script to look forgives this once, as an outage
    wait_for(lambda: ls.try_match("job-first") is None, timeout=ls.config.suspect_after + 1)
    for i in range(15):  # and never again, however far the sweeps lag
        assert ls.try_match(f"job-{i}") is None
        time.sleep(0.2)


def test_a_lease_record_lost_before_the_sweep_reached_it_gives_its_slot_back(ls: Harness) -> None:
    rt = ls.server.rt
    boot, _ = ls.register("gpu-1")
    with ls.beating({"gpu-1": boot}):
        lease = ls.match("job-1").lease
        ls.redis.delete(rt.keys.partition(lease_partition(lease.lease_id)).lease(lease.lease_id))
        wait_for(lambda: ls.try_match("job-2") == "gpu-1")


# -- bounded growth, no head-of-line blocking ------------------------------------------------


def test_jobs_no_node_can_serve_do_not_hide_the_ones_behind_them(ls: Harness) -> None:
    for i in range(20):
        enqueue(ls, f"huge-{i}", regions=["eu-west"], min_vram_mb=640_000, priority=5)
    enqueue(ls, "small", regions=["eu-west"])
    stream = Stream(ls)
    try:
        ls.register("gpu-1")
        assert stream.next().job_id == "small"
    finally:
        stream.close()


def test_a_cancelled_job_leaves_no_record_behind_for_ever(make_server: ServerFactory) -> None:
    ls = make_server(job_ttl=30.0)
    enqueue(ls, "job-1", regions=["eu-west"])
    ls.queue.Cancel(qpb.CancelRequest(job_id="job-1"), timeout=5)
    assert 0 < ls.redis.pttl(ls.server.rt.keys.job("job-1")) <= 30_000


def test_a_partition_that_holds_nothing_leaves_the_catalogue(make_server: ServerFactory) -> None:
    ls = make_server(drop_empty_after=0.3)
    enqueue(ls, "job-1", regions=["nowhere"], ttl={"nanos": 200_000_000})
    rt = ls.server.rt
    assert ls.redis.sismember(rt.keys.partitions, "test/nowhere/0")
    wait_for(lambda: not ls.redis.sismember(rt.keys.partitions, "test/nowhere/0"))
    boot, _ = ls.register("gpu-1", region="nowhere")  # a node arriving brings it back
    assert ls.redis.sismember(rt.keys.partitions, "test/nowhere/0")
    with ls.beating({"gpu-1": boot}):
        assert ls.try_match("job-2", regions=["nowhere"]) == "gpu-1"


# -- a job_id names one job ------------------------------------------------------------------


def test_a_job_waiting_for_one_model_is_refused_for_another(ls: Harness) -> None:
    enqueue(ls, "job-j", model="m-a", regions=["eu-west"])
    for call in (
        lambda: enqueue(ls, "job-j", model="m-b", regions=["eu-west"]),
        lambda: ls.match("job-j", model="m-b", regions=["eu-west"], wait={"seconds": 1}),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(info.value) == "JOB_ID_CONFLICT"


def test_busy_nodes_keep_a_waiting_job_waiting(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=1, state=BUSY)
    assert enqueue(ls, "job-1", regions=["eu-west"]).position == 0
    assert ls.get("gpu-1").state == node_pb2.NODE_STATE_BUSY
    assert _code(lambda: ls.queue.Cancel(qpb.CancelRequest(job_id="job-1"), timeout=5)) == grpc.StatusCode.OK


def test_a_job_never_returns_to_a_node_it_failed_on_even_if_the_record_step_is_lost(ls: Harness) -> None:
    rt = ls.server.rt
    boots = {"gpu-1": ls.register("gpu-1")[0], "gpu-2": ls.register("gpu-2")[0]}
    with ls.beating(boots):
        lease = ls.match("job-1").lease
        ls.fail(lease)
        # The global tried set is written after the script; lose it, as a crash would.
        ls.redis.delete(rt.keys.job_tried("job-1"))
        for _ in range(4):
            again = ls.match("job-1").lease
            assert again.node_id != lease.node_id
            ls.release(again)


def test_a_lease_given_back_leaves_the_winners_assignment_with_its_scheduler(ls: Harness) -> None:
    """Two partitions hand one job a slot at once; the second is given back, and the scheduler
    still has (and only ever hears of) the first."""
    rt = ls.server.rt
    boots = {"eu-1": ls.register("eu-1", region="eu")[0], "us-1": ls.register("us-1", region="us")[0]}
    with ls.beating(boots):
        spec = jobs.JobSpec("job-1", "test", "llama-3-8b", [], 0, [], "", {}, frozenset(), 60_000, 0)
        first = jobs.try_partition(rt, Partition("test", "eu"), spec, set(), scheduler="sched-a", wait_ms=0)
        second = jobs.try_partition(rt, Partition("test", "us"), spec, set(), scheduler="sched-a", wait_ms=0)
        assert isinstance(first, Assignment) and isinstance(second, Assignment)
        assert settle(rt, [first]) == [first]
        assert settle(rt, [second]) == []  # given back
        assert ls.redis.hget(rt.keys.scheduler("sched-a"), "job-1") == first.lease_id
        assert ls.get("us-1").leased_slots == 0
        stream = Stream(ls, "sched-a")
        try:
            assert stream.next().lease.lease_id == first.lease_id
            with pytest.raises(queue.Empty):
                stream.next(timeout=0.5)
        finally:
            stream.close()
