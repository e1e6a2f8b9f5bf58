"""The history checker on hand-built histories: each violation is found, clean histories pass.
No Redis, no server."""

from __future__ import annotations

import threading
import time

from google.protobuf import timestamp_pb2

from livestate.v1 import lease_pb2

from .history import (
    ASSIGNMENT,
    BEAT,
    CANCEL,
    ENQUEUE,
    FAIL,
    MATCH,
    QUEUE_LOST,
    RELEASE,
    RENEW,
    STATE_LOST,
    History,
    LeaseRef,
)

P = "test/eu-west/0"


def lease(n: int, job: str, node: str = "n1", token: int | None = None, expire: float = 100.0) -> LeaseRef:
    return LeaseRef(f"{P}/lease-{n}", job, node, token if token is not None else n, expire)


class Builder:
    """Calls by hand, at given times."""

    def __init__(self) -> None:
        self.h = History()

    def match(self, ref: LeaseRef, at: float, done: float | None = None, proc: str = "s1") -> None:
        op = self.h.invoke(MATCH, proc, job_id=ref.job_id, at=at)
        self.h.ok(op, ref, at=done if done is not None else at + 0.01)

    def match_error(self, job: str, at: float, done: float, code: str, proc: str = "s1") -> None:
        op = self.h.invoke(MATCH, proc, job_id=job, at=at)
        self.h.error(op, code, at=done)

    def call(
        self,
        kind: str,
        ref: LeaseRef,
        at: float,
        done: float,
        outcome: str = "ok",
        result: LeaseRef | None = None,
    ) -> None:
        op = self.h.invoke(kind, "s1", lease=ref, at=at)
        if outcome == "ok":
            self.h.ok(op, result, at=done)
        else:
            self.h.error(op, outcome, at=done)

    def enqueue(self, job: str, at: float, ttl: float = 60.0, proc: str = "q1") -> None:
        op = self.h.invoke(ENQUEUE, proc, job_id=job, at=at, ttl=ttl)
        self.h.ok(op, at=at + 0.01)

    def assignment(self, ref: LeaseRef, at: float, proc: str = "q1") -> None:
        self.h.event(ASSIGNMENT, proc, result=ref, at=at)

    def check(self, **slots: int) -> list[str]:
        return self.h.check(slots)


def one(violations: list[str], *words: str) -> str:
    assert len(violations) == 1, violations
    for word in words:
        assert word in violations[0], violations[0]
    return violations[0]


# -- slots --


def test_clean_match_release_rematch_passes() -> None:
    b = Builder()
    a, c = lease(1, "j1"), lease(2, "j2")
    b.match(a, at=0.0, done=0.1)
    b.call(RENEW, a, 0.2, 0.3, result=lease(1, "j1", expire=200.0))
    b.call(RELEASE, a, 0.5, 0.6)
    b.match(c, at=0.55, done=0.7)  # granted after the release was sent: fine
    b.call(FAIL, c, 1.0, 1.1)
    assert b.check() == []


def test_two_live_leases_on_a_one_slot_node_are_reported() -> None:
    b = Builder()
    b.match(lease(1, "j1"), at=0.0, done=0.1)
    b.match(lease(2, "j2"), at=0.2, done=0.3)
    one(b.check(), "node n1 (1 slot(s)) held 2 live leases", "lease-1", "lease-2")


def test_a_two_slot_node_may_hold_two() -> None:
    b = Builder()
    b.match(lease(1, "j1"), at=0.0, done=0.1)
    b.match(lease(2, "j2"), at=0.2, done=0.3)
    assert b.check(n1=2) == []
    b.match(lease(3, "j3"), at=0.4, done=0.5)
    one(b.check(n1=2), "held 3 live leases")


def test_slots_recorded_in_the_history_are_used() -> None:
    b = Builder()
    b.h.slots["n1"] = 2
    b.match(lease(1, "j1"), at=0.0, done=0.1)
    b.match(lease(2, "j2"), at=0.2, done=0.3)
    assert b.check() == []


def test_grant_completing_before_the_release_was_sent_overlaps() -> None:
    b = Builder()
    a = lease(1, "j1")
    b.match(a, at=0.0, done=0.1)
    b.match(lease(2, "j2"), at=0.3, done=0.4)
    b.call(RELEASE, a, 0.5, 0.6)
    one(b.check(), "held 2 live leases")


def test_not_found_ends_a_lease_at_its_completion() -> None:
    b = Builder()
    a = lease(1, "j1")
    b.match(a, at=0.0, done=0.1)
    b.call(RENEW, a, 0.2, 0.3, outcome="NOT_FOUND")
    b.match(lease(2, "j2"), at=0.25, done=0.35)
    assert b.check() == []

    late = Builder()
    late.match(a, at=0.0, done=0.1)
    late.call(RELEASE, a, 0.2, 0.5, outcome="NOT_FOUND")
    late.match(lease(2, "j2"), at=0.25, done=0.35)  # granted before the holder learned
    one(late.check(), "held 2 live leases")


def test_expiry_ends_a_lease_and_renewal_extends_it() -> None:
    b = Builder()
    a = lease(1, "j1", expire=1.0)
    b.match(a, at=0.0, done=0.1)
    b.match(lease(2, "j2"), at=1.5, done=1.6)
    assert b.check() == []

    renewed = Builder()
    renewed.match(a, at=0.0, done=0.1)
    renewed.call(RENEW, a, 0.5, 0.6, result=lease(1, "j1", expire=5.0))
    renewed.match(lease(2, "j2"), at=1.5, done=1.6)
    one(renewed.check(), "held 2 live leases")


def test_release_of_unknown_outcome_may_have_ended_the_lease_when_sent() -> None:
    b = Builder()
    a = lease(1, "j1")
    b.match(a, at=0.0, done=0.1)
    b.call(RELEASE, a, 0.2, 0.7, outcome="DEADLINE_EXCEEDED")
    b.match(lease(2, "j2"), at=0.3, done=0.4)
    b.call(RELEASE, a, 0.8, 0.9, outcome="NOT_FOUND")
    assert b.check() == []


def test_a_later_ok_release_proves_the_unknown_one_did_nothing() -> None:
    b = Builder()
    a = lease(1, "j1")
    b.match(a, at=0.0, done=0.1)
    b.call(RELEASE, a, 0.2, 0.7, outcome="UNAVAILABLE")
    b.match(lease(2, "j2"), at=0.3, done=0.4)
    b.call(RELEASE, a, 0.8, 0.9)  # OK: lease 1 was still there until 0.8
    one(b.check(), "held 2 live leases")


def test_state_lost_does_not_end_a_lease_its_holder_still_runs() -> None:
    b = Builder()
    a = lease(1, "j1")
    b.match(a, at=0.0, done=0.1)
    b.h.event(STATE_LOST, "test", at=1.0)
    b.match(lease(2, "j2"), at=2.0, done=2.1)  # the node handed out while j1 still runs there
    b.call(RELEASE, a, 3.0, 3.1, outcome="NOT_FOUND")
    one(b.check(), "held 2 live leases")

    told = Builder()
    told.match(a, at=0.0, done=0.1)
    told.h.event(STATE_LOST, "test", at=1.0)
    told.call(RENEW, a, 1.5, 1.6, outcome="NOT_FOUND")  # the holder learned it is gone
    told.match(lease(2, "j2"), at=2.0, done=2.1)
    assert told.check() == []


# -- one job, two leases --


def test_a_job_live_on_two_leases_is_reported() -> None:
    b = Builder()
    b.match(lease(1, "j1", node="n1"), at=0.0, done=0.1)
    b.match(lease(2, "j1", node="n2"), at=0.2, done=0.3)
    one(b.check(), "job j1 live on two leases", "lease-1", "lease-2")


def test_a_job_may_move_after_fail_or_loss() -> None:
    b = Builder()
    a = lease(1, "j1", node="n1")
    b.match(a, at=0.0, done=0.1)
    b.call(FAIL, a, 0.2, 0.3)
    c = lease(2, "j1", node="n2")
    b.match(c, at=0.4, done=0.5)
    b.call(RENEW, c, 0.6, 0.7, outcome="NOT_FOUND")
    b.match(lease(3, "j1", node="n3"), at=0.8, done=0.9)
    assert b.check() == []


def test_match_retries_returning_the_same_lease_are_one_lease() -> None:
    b = Builder()
    b.match_error("j1", at=0.0, done=0.5, code="DEADLINE_EXCEEDED")
    b.match(lease(1, "j1"), at=0.6, done=0.7)
    b.match(lease(1, "j1"), at=0.8, done=0.9)
    assert b.check() == []


# -- fencing --


def test_tokens_must_grow_between_grants_ordered_in_real_time() -> None:
    b = Builder()
    b.match(lease(1, "j1", node="n1", token=100), at=0.0, done=0.1)
    b.match(lease(2, "j2", node="n2", token=50), at=0.2, done=0.3)
    one(b.check(), "fencing in test/eu-west/0", "lease-1", "lease-2")


def test_concurrent_grants_may_come_in_any_token_order() -> None:
    b = Builder()
    b.match(lease(1, "j1", node="n1", token=100), at=0.0, done=0.3)
    b.match(lease(2, "j2", node="n2", token=50), at=0.2, done=0.4)
    assert b.check() == []


def test_fencing_is_per_partition() -> None:
    b = Builder()
    b.match(lease(1, "j1", node="n1", token=100), at=0.0, done=0.1)
    other = LeaseRef("test/us-east/0/lease-2", "j2", "n2", 50, 100.0)
    b.match(other, at=0.2, done=0.3)
    assert b.check() == []


def test_fencing_counts_an_earlier_attempt_of_the_same_job_as_its_start() -> None:
    b = Builder()
    b.match_error("j2", at=0.05, done=0.55, code="DEADLINE_EXCEEDED")  # may have made lease 2
    b.match(lease(1, "j1", node="n1", token=100), at=0.0, done=0.1)
    b.match(lease(2, "j2", node="n2", token=50), at=0.6, done=0.7)
    assert b.check() == []


def test_fencing_holds_across_state_loss() -> None:
    b = Builder()
    a = lease(1, "j1", token=100)
    b.match(a, at=0.0, done=0.1)
    b.h.event(STATE_LOST, "test", at=1.0)
    b.match(lease(2, "j2", node="n2", token=99), at=2.0, done=2.1)
    one(b.check(), "fencing")


# -- forbidden statuses --


def test_internal_and_unknown_are_violations() -> None:
    b = Builder()
    b.match_error("j1", at=0.0, done=0.1, code="INTERNAL")
    op = b.h.invoke(BEAT, "n1", at=0.2)
    b.h.error(op, "UNKNOWN", at=0.3)
    b.match_error("j2", at=0.4, done=0.5, code="UNAVAILABLE")
    violations = b.check()
    assert len(violations) == 2, violations
    assert "INTERNAL" in violations[0] and "UNKNOWN" in violations[1]


# -- queue outcomes --


def test_enqueued_job_assigned_once_passes_even_when_replayed() -> None:
    b = Builder()
    a = lease(1, "j1")
    b.enqueue("j1", at=0.0)
    b.assignment(a, at=0.5)
    b.assignment(a, at=0.6)  # the same lease delivered again
    b.call(RELEASE, a, 0.7, 0.8)
    assert b.check() == []


def test_job_assigned_to_two_leases_is_reported() -> None:
    b = Builder()
    a = lease(1, "j1", node="n1")
    b.enqueue("j1", at=0.0)
    b.assignment(a, at=0.5)
    b.call(RELEASE, a, 0.6, 0.7)
    b.assignment(lease(2, "j1", node="n2"), at=0.9)
    one(b.check(), "j1", "assigned to 2 different leases")


def test_lost_then_requeued_job_may_be_assigned_again() -> None:
    b = Builder()
    b.enqueue("j1", at=0.0)
    b.h.event(QUEUE_LOST, "q1", at=1.0, epoch=7)
    b.enqueue("j1", at=1.1)
    a = lease(1, "j1")
    b.assignment(a, at=1.5)
    b.call(RELEASE, a, 1.6, 1.7)
    assert b.check() == []


def test_assigned_then_released_job_may_be_enqueued_and_assigned_again() -> None:
    b = Builder()
    a, c = lease(1, "j1"), lease(2, "j1")
    b.enqueue("j1", at=0.0)
    b.assignment(a, at=0.5)
    b.call(RELEASE, a, 0.6, 0.7)
    b.enqueue("j1", at=0.8)
    b.assignment(c, at=0.9)
    assert b.check() == []


def test_job_never_settled_is_reported_unless_its_ttl_passed() -> None:
    b = Builder()
    b.enqueue("j1", at=0.0, ttl=5.0)
    b.match_error("other", at=3.0, done=3.1, code="NOT_FOUND")  # the history runs to 3.1
    one(b.check(), "job j1", "never assigned, cancelled, expired nor reported lost")

    b.match_error("other", at=6.0, done=6.1, code="NOT_FOUND")  # now past its ttl: expired
    assert b.check() == []


def test_loss_told_to_another_scheduler_does_not_settle_a_job() -> None:
    b = Builder()
    b.enqueue("j1", at=0.0, proc="q1")
    b.h.event(QUEUE_LOST, "q2", at=1.0)
    one(b.check(), "never assigned")
    b.h.event(QUEUE_LOST, "q1", at=1.5)
    assert b.check() == []


def test_cancelled_job_passes_and_cancelled_and_assigned_is_reported() -> None:
    b = Builder()
    b.enqueue("j1", at=0.0)
    op = b.h.invoke(CANCEL, "q1", job_id="j1", at=0.5)
    b.h.ok(op, at=0.6)
    assert b.check() == []
    b.assignment(lease(1, "j1"), at=0.7)
    one(b.check(), "j1", "ended more than one way: assigned and cancelled")


def test_failed_enqueue_leaves_nothing_to_settle() -> None:
    b = Builder()
    op = b.h.invoke(ENQUEUE, "q1", job_id="j1", at=0.0, ttl=60.0)
    b.h.error(op, "INVALID_ARGUMENT", at=0.1)
    assert b.check() == []


# -- the recorder --


def test_recorder_is_thread_safe_and_converts_lease_times() -> None:
    h = History()

    def record(i: int) -> None:
        for j in range(200):
            op = h.invoke(BEAT, f"n{i}")
            h.ok(op)
            h.event(QUEUE_LOST, f"q{i}", n=j)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = h.ops()
    assert len(ops) == 8 * 400
    assert sorted(op.index for op in ops) == list(range(len(ops)))
    assert all(op.complete is not None and op.complete >= op.invoke for op in ops)

    expire = timestamp_pb2.Timestamp()
    expire.FromNanoseconds(time.time_ns() + 30 * 10**9)
    ref = h.lease(
        lease_pb2.Lease(lease_id=f"{P}/x", job_id="j", node_id="n", fencing_token=9, expire_time=expire)
    )
    assert abs(ref.expire - (time.monotonic() + 30)) < 0.5
    assert ref.partition == P
