"""Match: atomic match-and-claim, filters, policies, slots, idempotency, fencing, expiry."""

from __future__ import annotations

import collections
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import pytest

from conftest import ServerFactory
from harness import BUSY, Harness, error_field, error_reason, wait_for
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import node_pb2


def _not_found(call: Any) -> bool:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    return True


def _redis_ms(ls: Harness) -> int:
    seconds, micros = ls.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_match_claims_an_idle_node_with_a_lease(ls: Harness) -> None:
    ls.register("gpu-1")

    before = _redis_ms(ls)
    response = ls.match("job-1", lease_ttl={"seconds": 30})
    after = _redis_ms(ls)

    lease = response.lease
    assert (lease.job_id, lease.node_id) == ("job-1", "gpu-1")
    assert lease.fencing_token > 0
    assert lease.lease_id.startswith("test/eu-west/0/")
    assert before + 30_000 <= lease.expire_time.ToMilliseconds() <= after + 30_000
    assert response.node.spec.node_id == "gpu-1"
    assert response.node.leased_slots == 1
    assert _not_found(lambda: ls.match("job-2"))


def test_concurrent_matches_hand_each_single_slot_node_out_once(make_server: ServerFactory) -> None:
    # Deadlines long enough that no node goes silent while 2,000 Matches run on 2 cores.
    ls = make_server(heartbeat_interval=5, suspect_after=30, offline_after=60)
    for i in range(100):
        ls.register(f"n{i:03d}")

    def attempt(i: int) -> str | None:
        try:
            return ls.match(f"job-{i}").lease.node_id
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
            return None

    with futures.ThreadPoolExecutor(32) as pool:
        nodes = [n for n in pool.map(attempt, range(2000)) if n is not None]

    assert len(nodes) == 100
    assert len(set(nodes)) == 100


def test_no_node_ever_holds_more_leases_than_slots_with_releases_mixed_in(ls: Harness) -> None:
    boots = {f"n{i:02d}": ls.register(f"n{i:02d}", slots=1 + i % 3)[0] for i in range(20)}
    slots = {f"n{i:02d}": 1 + i % 3 for i in range(20)}
    history: list[tuple[str, float, float]] = []  # node, held from (Match returned), to (Release called)
    lock = threading.Lock()

    def scheduler(worker: int) -> None:
        # A fixed number of attempts, not a time budget: the outcome must not depend on how fast
        # the machine is today.
        for n in range(40):
            try:
                lease = ls.match(f"w{worker}-{n}").lease
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
                continue
            start = time.monotonic()
            time.sleep(0.002)
            end = time.monotonic()
            ls.release(lease)
            with lock:
                history.append((lease.node_id, start, end))

    threads = [threading.Thread(target=scheduler, args=(w,)) for w in range(16)]
    with ls.beating(boots):
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert len(history) > 100
    by_node: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for node, start, end in history:
        by_node[node] += [(start, 1), (end, -1)]
    for node, points in by_node.items():
        held = 0
        for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
            held += delta
            assert held <= slots[node], f"{node} held {held} leases with {slots[node]} slots"


def test_node_with_four_slots_takes_four_jobs_then_leaves_the_idle_queue(ls: Harness) -> None:
    ls.register("big", slots=4)

    leases = [ls.match(f"job-{i}").lease for i in range(4)]

    assert {lease.node_id for lease in leases} == {"big"}
    assert len({lease.fencing_token for lease in leases}) == 4
    assert ls.get("big").leased_slots == 4
    pk = ls.server.rt.keys.partition(ls.server.rt.locator.lookup("big"))  # type: ignore[arg-type]
    assert ls.redis.zscore(pk.idle_queue("llama-3-8b"), "big") is None
    assert _not_found(lambda: ls.match("job-5"))

    ls.release(leases[0])

    assert ls.match("job-6").lease.node_id == "big"


def test_match_is_idempotent_by_job_id_while_the_lease_lives(ls: Harness) -> None:
    ls.register("gpu-1")
    ls.register("gpu-2")
    first = ls.match("job-1").lease

    again = ls.match("job-1").lease

    assert again == first
    ls.release(first)
    assert ls.match("job-1").lease.lease_id != first.lease_id


def test_a_job_asked_for_again_in_another_region_keeps_its_lease(ls: Harness) -> None:
    """The second Match claims in its preferred region before it learns the job holds a lease
    elsewhere: it answers that lease, and the slot it claimed in passing goes back."""
    ls.register("eu-1", region="eu")
    ls.register("us-1", region="us")
    first = ls.match("job-1", regions=["eu"]).lease

    again = ls.match("job-1", regions=["us", "eu"]).lease

    assert again == first
    assert ls.get("us-1").leased_slots == 0
    assert ls.match("job-2", regions=["us"]).lease.node_id == "us-1"


def test_concurrent_retries_of_one_job_share_one_lease(ls: Harness) -> None:
    for i in range(10):
        ls.register(f"n{i}")

    with futures.ThreadPoolExecutor(8) as pool:
        leases = list(pool.map(lambda _: ls.match("the-job").lease.lease_id, range(16)))

    assert len(set(leases)) == 1
    assert sum(ls.get(f"n{i}").leased_slots for i in range(10)) == 1


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"min_vram_mb": 40_000}, {"big-80"}),
        ({"gpu_models": ["NVIDIA H100"]}, {"big-80"}),
        ({"subcloud": "acme"}, {"small-1"}),
        ({"labels": {"tier": "gold"}}, {"small-2"}),
        ({"labels": {"tier": "gold", "zone": "a"}}, set()),
        ({"exclude_node_ids": ["small-0", "small-1", "small-2"]}, {"big-80"}),
        ({"env": "prod"}, set()),
    ],
)
def test_match_filters(ls: Harness, request_fields: dict[str, Any], expected: set[str]) -> None:
    ls.register("small-0")
    ls.register("small-1", subclouds=["acme"])
    ls.register("small-2", labels={"tier": "gold"})
    ls.register("big-80", gpu_model="NVIDIA H100", vram_total_mb=81_920)

    found = set()
    for i in range(5):
        try:
            found.add(ls.match(f"job-{i}", **request_fields).lease.node_id)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
            break

    assert found == expected


def test_one_large_node_behind_thousands_of_small_ones_is_found(make_server: ServerFactory) -> None:
    ls = make_server(match_walk=64, heartbeat_interval=5, suspect_after=30, offline_after=60)
    rt = ls.server.rt
    for i in range(2000):
        ls.register(f"small-{i:04d}")
    ls.register("big-80", vram_total_mb=81_920)
    ls.register("zz-h100", gpu_model="NVIDIA H100")  # rare GPU, behind everyone in the idle queue

    assert ls.match("vram-job", min_vram_mb=80_000).lease.node_id == "big-80"
    assert ls.match("gpu-job", gpu_models=["NVIDIA H100"]).lease.node_id == "zz-h100"
    assert rt.config.match_walk == 64  # the second one took several bounded script calls


def test_regions_are_tried_in_order_of_preference_and_spill_over(ls: Harness) -> None:
    ls.register("eu-1", region="eu")
    ls.register("us-1", region="us")
    ls.register("ap-1", region="ap")

    picked = [ls.match(f"job-{i}", regions=["us", "eu"]).lease.node_id for i in range(2)]

    assert picked == ["us-1", "eu-1"]
    assert _not_found(lambda: ls.match("job-3", regions=["us", "eu"]))
    assert ls.match("job-4").lease.node_id == "ap-1"  # no regions: any region


def test_longest_idle_rotates_through_nodes(ls: Harness) -> None:
    for i in range(3):
        ls.register(f"n{i}")
        time.sleep(0.005)

    order = []
    for i in range(6):
        lease = ls.match(f"job-{i}").lease
        order.append(lease.node_id)
        ls.release(lease)

    assert order == ["n0", "n1", "n2", "n0", "n1", "n2"]


def test_most_free_vram_policy_picks_the_emptiest_node(ls: Harness) -> None:
    for i, free in enumerate([1000, 9000, 5000]):
        boot, _ = ls.register(f"n{i}")
        ls.beat(f"n{i}", boot, seq=1, vram_free_mb=free)

    lease = ls.match("job", policy=mpb.SELECTION_POLICY_MOST_FREE_VRAM).lease

    assert lease.node_id == "n1"


def test_random_policy_spreads_over_eligible_nodes(ls: Harness) -> None:
    for i in range(4):
        ls.register(f"n{i}")

    picked = set()
    for i in range(40):
        lease = ls.match(f"job-{i}", policy=mpb.SELECTION_POLICY_RANDOM).lease
        picked.add(lease.node_id)
        ls.release(lease)

    assert len(picked) >= 3


@pytest.mark.parametrize("state", [BUSY, node_pb2.NODE_STATE_LOADING, node_pb2.NODE_STATE_DRAINING])
def test_nodes_not_reporting_idle_are_never_matched(ls: Harness, state: node_pb2.NodeState) -> None:
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=1, state=state)

    assert _not_found(lambda: ls.match("job"))

    ls.beat("gpu-1", boot, seq=2)  # IDLE again
    assert ls.match("job").lease.node_id == "gpu-1"


def test_silent_node_is_never_matched_once_its_deadline_passed_even_before_a_sweep(
    make_server: ServerFactory,
) -> None:
    ls = make_server(sweep_interval=3600)
    ls.register("gpu-1")

    wait_for(lambda: ls.liveness("gpu-1") != node_pb2.LIVENESS_ONLINE, timeout=2)

    assert _not_found(lambda: ls.match("job"))


def test_expired_lease_returns_the_node(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    lease = ls.match("job-1", lease_ttl={"nanos": 300_000_000}).lease

    def matchable() -> bool:
        ls.beat("gpu-1", boot)  # keep the node alive meanwhile
        try:
            return ls.match("job-2").lease.node_id == "gpu-1"
        except grpc.RpcError:
            return False

    wait_for(matchable, timeout=3)
    with pytest.raises(grpc.RpcError) as err:
        ls.release(lease)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert any(e["type"] == "6" and "expired" in e["detail"] for e in ls.events())


def test_renew_extends_and_fencing_is_checked(ls: Harness) -> None:
    ls.register("gpu-1")
    lease = ls.match("job", lease_ttl={"seconds": 5}).lease

    renewed = ls.match_stub.Renew(
        mpb.RenewRequest(
            lease_id=lease.lease_id, fencing_token=lease.fencing_token, lease_ttl={"seconds": 120}
        ),
        timeout=5,
    ).lease

    assert renewed.lease_id == lease.lease_id
    assert renewed.expire_time.ToMilliseconds() > lease.expire_time.ToMilliseconds() + 100_000
    stale = lease.fencing_token - 1
    for call in (
        lambda: ls.match_stub.Renew(
            mpb.RenewRequest(lease_id=lease.lease_id, fencing_token=stale), timeout=5
        ),
        lambda: ls.match_stub.Release(
            mpb.ReleaseRequest(lease_id=lease.lease_id, fencing_token=stale), timeout=5
        ),
        lambda: ls.match_stub.Fail(mpb.FailRequest(lease_id=lease.lease_id, fencing_token=stale), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "STALE_FENCING_TOKEN"
    assert ls.get("gpu-1").leased_slots == 1  # refused calls changed nothing


def test_unknown_lease_is_not_found_and_malformed_lease_is_invalid(ls: Harness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ls.match_stub.Release(
            mpb.ReleaseRequest(lease_id="test/eu-west/0/" + "ab" * 16, fencing_token=1), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "LEASE_NOT_FOUND"
    for bad in ("", "nope", "a/b/c/d/e", "test/eu-west/x/abcdef12"):
        with pytest.raises(grpc.RpcError) as err:
            ls.match_stub.Renew(mpb.RenewRequest(lease_id=bad, fencing_token=1), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_field(err.value) == "lease_id"
    with pytest.raises(grpc.RpcError) as err:
        ls.match_stub.Release(mpb.ReleaseRequest(lease_id="test/eu-west/0/" + "ab" * 16), timeout=5)
    assert error_field(err.value) == "fencing_token"


def test_offline_node_loses_its_leases(ls: Harness) -> None:
    ls.register("gpu-1")
    lease = ls.match("job").lease

    wait_for(lambda: any(e["type"] == "6" for e in ls.events()), timeout=3)

    lost = [e for e in ls.events() if e["type"] == "6"]
    assert lost[0]["node"] == "gpu-1"
    assert lease.lease_id in lost[0]["detail"] and "offline" in lost[0]["detail"]
    with pytest.raises(grpc.RpcError) as err:
        ls.match_stub.Renew(
            mpb.RenewRequest(lease_id=lease.lease_id, fencing_token=lease.fencing_token), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_new_boot_releases_the_previous_boots_leases(ls: Harness) -> None:
    ls.register("gpu-1")
    lease = ls.match("job").lease

    ls.register("gpu-1")  # a new boot id

    assert ls.get("gpu-1").leased_slots == 0
    assert any(e["type"] == "6" and "restarted" in e["detail"] for e in ls.events())
    assert ls.match("job-2").lease.node_id == "gpu-1"
    with pytest.raises(grpc.RpcError):
        ls.release(lease)


def test_same_boot_re_registering_keeps_its_leases(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1", slots=2)
    lease = ls.match("job").lease

    ls.register("gpu-1", boot_id=boot, slots=2)

    assert ls.get("gpu-1").leased_slots == 1
    ls.release(lease)
    assert ls.get("gpu-1").leased_slots == 0


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"job_id": ""}, "job_id"),
        ({"job_id": "has space"}, "job_id"),
        ({"model": ""}, "model"),
        ({"env": ""}, "env"),
        ({"lease_ttl": {"seconds": -1}}, "lease_ttl"),
        ({"lease_ttl": {"seconds": 10**9}}, "lease_ttl"),
        ({"wait": {"seconds": -5}}, "wait"),
        ({"policy": 42}, "policy"),
        ({"regions": ["eu", "eu"]}, "regions"),
        ({"exclude_node_ids": ["bad id"]}, "exclude_node_ids[0]"),
        ({"labels": {"bad key": "v"}}, "labels['bad key']"),
    ],
)
def test_match_rejects_bad_input_and_claims_nothing(
    ls: Harness, request_fields: dict[str, Any], field: str
) -> None:
    ls.register("gpu-1")
    values: dict[str, Any] = {"job_id": "job", "env": "test", "model": "llama-3-8b", **request_fields}

    with pytest.raises(grpc.RpcError) as err:
        ls.match_stub.Match(mpb.MatchRequest(**values), timeout=5)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == field
    assert ls.get("gpu-1").leased_slots == 0


def test_a_plain_match_and_its_release_need_no_worker_thread(make_server: ServerFactory) -> None:
    """Every worker thread busy: a plain Match and a Release are still answered (their round
    trips go through the batcher, on the event loop), and one that must take the slow way is
    answered once a thread is free."""
    ls = make_server(max_watchers=1, max_waiting_matches=1, unary_workers=2)
    boot, _ = ls.register("n1")
    ls.beat("n1", boot, seq=1)
    release = threading.Event()
    busy = [ls.server.pool.submit(release.wait, 30) for _ in range(ls.config.max_workers)]
    try:
        lease = ls.match("job-1").lease
        assert lease.node_id == "n1"
        ls.release(lease)
        lease = ls.match("job-1b").lease
        again = ls.match_stub.Match.future(mpb.MatchRequest(job_id="job-2", env="test", model="llama-3-8b"))
        with pytest.raises(grpc.FutureTimeoutError):  # NOT_FOUND needs the slow way: a thread
            again.result(timeout=0.5)
    finally:
        release.set()
        for done in busy:
            done.result(timeout=5)
    with pytest.raises(grpc.RpcError) as raised:
        again.result(timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert lease.fencing_token > 0


def test_a_released_job_matched_again_at_once_gets_a_new_lease(ls: Harness) -> None:
    """Release answers after its one script; the job record's copy of the lease is cleared with
    the next batch, and a Match that reads the record first sees that lease has ended."""
    boot, _ = ls.register("n1")
    ls.beat("n1", boot, seq=1)
    first = ls.match("job-1").lease
    ls.release(first)
    again = ls.match("job-1").lease
    assert again.lease_id != first.lease_id
    assert again.fencing_token > first.fencing_token
    ls.release(again)
    wait_for(lambda: ls.redis.hget(ls.server.rt.keys.job("job-1"), "lease") is None)
