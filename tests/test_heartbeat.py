"""HeartbeatService: Register, Beat, the Heartbeat stream and Deregister against real Redis."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest

from harness import BUSY, IDLE, OFFLINE, ONLINE, Harness, error_field, error_reason, spec, wait_for
from livestate.server.store.keys import Partition
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import node_pb2


def test_register_makes_node_online_with_its_spec(ls: Harness) -> None:
    boot, response = ls.register("gpu-1", labels={"tier": "a"}, slots=4, subclouds=["acme"])

    node = ls.get("gpu-1")
    assert node.liveness == ONLINE
    assert node.state == IDLE
    assert node.boot_id == boot
    assert node.spec.labels == {"tier": "a"}
    assert node.spec.slots == 4
    assert list(node.spec.subclouds) == ["acme"]
    assert response.heartbeat_interval.ToMilliseconds() == 200
    assert response.suspect_after.ToMilliseconds() == 600
    assert response.offline_after.ToMilliseconds() == 1000
    assert not response.restarted


def test_register_same_boot_is_idempotent(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=7, state=BUSY)

    _, again = ls.register("gpu-1", boot_id=boot)

    assert not again.restarted
    assert again.node.seq == 7  # the boot's beat sequence survives a repeated registration
    assert len([e for e in ls.events() if e["type"] == "1"]) == 1


def test_register_with_new_boot_replaces_previous_boot(ls: Harness) -> None:
    old_boot, _ = ls.register("gpu-1", models=["a", "b"], labels={"x": "1"})
    ls.beat("gpu-1", old_boot, seq=9, state=BUSY, running_jobs=1)

    new_boot, response = ls.register("gpu-1", models=["b", "c"])

    assert response.restarted
    node = ls.get("gpu-1")
    assert node.boot_id == new_boot
    assert node.seq == 0 and node.state == IDLE and node.running_jobs == 0
    assert dict(node.spec.labels) == {}
    assert ls.beat("gpu-1", old_boot, seq=10).resync_required  # the dead boot cannot beat
    pk = ls.server.rt.keys.partition(ls.server.rt.locator.lookup("gpu-1"))  # type: ignore[arg-type]
    assert ls.redis.zrange(pk.model_index("a"), 0, -1) == []
    assert ls.redis.zrange(pk.model_index("c"), 0, -1) == ["gpu-1"]


def test_register_in_another_region_moves_the_node(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1", region="eu-west")
    ls.register("gpu-1", boot_id=boot, region="us-east")

    assert ls.get("gpu-1").spec.region == "us-east"
    old = ls.server.rt.keys.partition(Partition("test", "eu-west"))
    assert not ls.redis.exists(old.node("gpu-1"))
    assert ls.redis.zscore(old.alive, "gpu-1") is None
    assert not ls.beat("gpu-1", boot, seq=1).resync_required


def test_beat_updates_reported_state(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")

    response = ls.beat("gpu-1", boot, seq=1, state=BUSY, vram_free_mb=1000, running_jobs=1)

    assert not response.resync_required
    assert response.next_interval.ToMilliseconds() == 200
    assert response.seq == 1
    node = ls.get("gpu-1")
    assert (node.state, node.vram_free_mb, node.running_jobs, node.seq) == (BUSY, 1000, 1, 1)


def test_out_of_order_beat_is_acknowledged_but_does_not_roll_state_back(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=5, state=BUSY)

    response = ls.beat("gpu-1", boot, seq=4, state=IDLE)

    assert not response.resync_required
    node = ls.get("gpu-1")
    assert (node.state, node.seq) == (BUSY, 5)


def test_beat_for_unknown_node_asks_for_resync(ls: Harness) -> None:
    assert ls.beat("never-registered", "boot-1").resync_required


def test_beat_with_another_boot_asks_for_resync_and_changes_nothing(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")

    assert ls.beat("gpu-1", "some-other-boot", seq=3, state=BUSY).resync_required

    node = ls.get("gpu-1")
    assert (node.boot_id, node.state, node.seq) == (boot, IDLE, 0)


def test_beat_with_free_vram_above_total_is_invalid(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1", vram_total_mb=1000)

    with pytest.raises(grpc.RpcError) as err:
        ls.beat("gpu-1", boot, seq=1, vram_free_mb=1001)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == "vram_free_mb"
    assert ls.get("gpu-1").seq == 0


def _stream(ls: Harness, requests: queue.Queue[hb.HeartbeatRequest | None]) -> Iterator[hb.HeartbeatResponse]:
    def generate() -> Iterator[hb.HeartbeatRequest]:
        while (item := requests.get()) is not None:
            yield item

    return ls.heartbeat.Heartbeat(generate(), timeout=10)  # type: ignore[no-any-return]


def test_heartbeat_stream_answers_each_beat_in_order(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    requests: queue.Queue[hb.HeartbeatRequest | None] = queue.Queue()
    responses = _stream(ls, requests)

    seen = []
    for seq in range(1, 6):
        requests.put(
            hb.HeartbeatRequest(node_id="gpu-1", boot_id=boot, seq=seq, state=BUSY, running_jobs=seq)
        )
        seen.append(next(responses))
    requests.put(None)

    assert [r.seq for r in seen] == [1, 2, 3, 4, 5]
    assert not any(r.resync_required for r in seen)
    assert all(r.next_interval.ToMilliseconds() == 200 for r in seen)
    assert ls.get("gpu-1").running_jobs == 5


def test_heartbeat_stream_keeps_node_online_past_offline_after(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    requests: queue.Queue[hb.HeartbeatRequest | None] = queue.Queue()
    responses = _stream(ls, requests)
    stop = threading.Event()

    def agent() -> None:
        seq = 0
        while not stop.wait(0.1):
            seq += 1
            requests.put(hb.HeartbeatRequest(node_id="gpu-1", boot_id=boot, seq=seq, state=IDLE))
            next(responses)
        requests.put(None)

    thread = threading.Thread(target=agent)
    thread.start()
    try:
        samples = []
        for _ in range(15):  # 1.5 s: well past offline_after (1 s)
            samples.append(ls.liveness("gpu-1"))
            stop.wait(0.1)
    finally:
        stop.set()
        thread.join()
    assert set(samples) == {ONLINE}


def test_heartbeat_stream_rejects_a_second_node(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.register("gpu-2")
    requests = [
        hb.HeartbeatRequest(node_id="gpu-1", boot_id=boot, seq=1, state=IDLE),
        hb.HeartbeatRequest(node_id="gpu-2", boot_id=boot, seq=2, state=IDLE),
    ]

    responses = ls.heartbeat.Heartbeat(iter(requests), timeout=5)
    assert not next(responses).resync_required
    with pytest.raises(grpc.RpcError) as err:
        next(responses)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == "node_id"


def test_heartbeat_stream_tells_unknown_node_to_resync(ls: Harness) -> None:
    requests = [hb.HeartbeatRequest(node_id="ghost", boot_id="b", seq=1, state=IDLE)]

    (response,) = list(ls.heartbeat.Heartbeat(iter(requests), timeout=5))

    assert response.resync_required


def test_deregister_takes_node_offline_at_once(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")

    ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="gpu-1", boot_id=boot), timeout=5)

    node = ls.get("gpu-1")
    assert node.liveness == OFFLINE
    pk = ls.server.rt.keys.partition(ls.server.rt.locator.lookup("gpu-1"))  # type: ignore[arg-type]
    assert ls.redis.zscore(pk.alive, "gpu-1") is None
    assert ls.beat("gpu-1", boot, seq=1).resync_required
    assert ls.events()[-1]["detail"] == "deregistered"
    # Idempotent: a repeated call succeeds and changes nothing.
    ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="gpu-1", boot_id=boot), timeout=5)


def test_deregister_unknown_node_is_not_found(ls: Harness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="ghost", boot_id="b"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_deregister_with_stale_boot_is_refused(ls: Harness) -> None:
    ls.register("gpu-1")

    with pytest.raises(grpc.RpcError) as err:
        ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="gpu-1", boot_id="old-boot"), timeout=5)

    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "BOOT_MISMATCH"
    assert ls.liveness("gpu-1") == ONLINE


def test_reregister_after_deregister_brings_node_back(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="gpu-1", boot_id=boot), timeout=5)

    new_boot = uuid.uuid4().hex
    ls.heartbeat.Register(hb.RegisterRequest(node=spec("gpu-1"), boot_id=new_boot), timeout=5)

    assert ls.liveness("gpu-1") == ONLINE
    assert not ls.beat("gpu-1", new_boot, seq=1).resync_required


def test_register_initial_state_and_vram(ls: Harness) -> None:
    ls.heartbeat.Register(
        hb.RegisterRequest(
            node=spec("gpu-1"), boot_id="b1", state=node_pb2.NODE_STATE_LOADING, vram_free_mb=500
        ),
        timeout=5,
    )

    node = wait_for(lambda: ls.get("gpu-1"))
    assert (node.state, node.vram_free_mb) == (node_pb2.NODE_STATE_LOADING, 500)


def test_agent_cancelling_its_stream_is_not_an_error(ls: Harness, caplog: pytest.LogCaptureFixture) -> None:
    boot, _ = ls.register("gpu-1")
    hold = threading.Event()

    def agent() -> Iterator[hb.HeartbeatRequest]:
        yield hb.HeartbeatRequest(node_id="gpu-1", boot_id=boot, seq=1, state=IDLE)
        hold.wait(10)

    responses = ls.heartbeat.Heartbeat(agent(), timeout=10)
    assert not next(responses).resync_required
    responses.cancel()
    hold.set()

    wait_for(lambda: ls.beat("gpu-1", boot, seq=2).seq == 2)  # the server carries on
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
