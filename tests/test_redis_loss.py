"""Redis losing its state, dying, freezing: resync, UNAVAILABLE, recovery; never false offlines."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from conftest import ServerFactory
from harness import IDLE, OFFLINE, ONLINE, Harness, enqueue, error_reason, spec, wait_for
from livestate.server.process.app import SERVICE_NAMES
from livestate.server.store.embedded import EmbeddedRedis
from livestate.server.store.keys import Partition, PartitionKeys
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import node_service_pb2 as ns
from livestate.v1 import queue_service_pb2 as qpb


class Agents:
    """N agents beating every interval on their own thread, re-registering when told to."""

    def __init__(self, ls: Harness, count: int) -> None:
        self.ls = ls
        self.boots = {f"agent-{i}": uuid.uuid4().hex for i in range(count)}
        self.resyncs: dict[str, list[float]] = {node_id: [] for node_id in self.boots}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        for node_id, boot in self.boots.items():
            ls.register(node_id, boot_id=boot)

    def __enter__(self) -> Agents:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(self.ls.config.heartbeat_interval):
            seq += 1
            for node_id, boot in self.boots.items():
                try:
                    if self.ls.beat(node_id, boot, seq=seq).resync_required:
                        self.resyncs[node_id].append(time.monotonic())
                        self.ls.register(node_id, boot_id=boot)
                except grpc.RpcError as exc:
                    self.errors.append(exc)


def test_flush_makes_every_node_resync_and_none_offline(ls: Harness) -> None:
    with Agents(ls, 20) as agents:
        wait_for(lambda: len(ls.events()) >= 20)
        flushed_at = time.monotonic()
        ls.redis.flushdb()

        # Every agent is told to resync on its next beat and is back within 2 intervals.
        wait_for(lambda: all(agents.resyncs.values()), timeout=2 * ls.config.heartbeat_interval + 1)
        assert all(
            t - flushed_at <= 2 * ls.config.heartbeat_interval + 0.5
            for times in agents.resyncs.values()
            for t in times
        )
        wait_for(lambda: all(ls.liveness(n) == ONLINE for n in agents.boots))
        # Hold past offline_after: nobody is declared offline because Redis lost its state.
        time.sleep(ls.config.offline_after + 0.3)
        assert all(ls.liveness(n) == ONLINE for n in agents.boots)
    assert not [e for e in ls.events() if e["type"] in ("2", "3")]
    assert not agents.errors


def test_reloaded_stale_snapshot_starts_new_epoch_without_false_offlines(ls: Harness) -> None:
    rt = ls.server.rt
    with Agents(ls, 10) as agents:
        wait_for(lambda: len(ls.events()) >= 10)
        wait_for(lambda: rt.epoch.mark > 3)
        pk = rt.keys.partition(rt.locator.lookup("agent-0"))  # type: ignore[arg-type]
        _as_if_back_from_an_old_snapshot(ls, rt.keys.epoch, pk, agents.boots)

        wait_for(lambda: all(agents.resyncs.values()), timeout=3)
        time.sleep(ls.config.offline_after + 0.3)
        assert all(ls.liveness(n) == ONLINE for n in agents.boots)
    assert not [e for e in ls.events() if e["type"] in ("2", "3")]


def _as_if_back_from_an_old_snapshot(
    ls: Harness, epoch_key: str, pk: PartitionKeys, node_ids: Iterable[str]
) -> None:
    """What a restart from an old RDB looks like to the epoch at `epoch_key`: the same keys,
    another run_id, a state marker behind the one the server has seen, last-seen times long past."""
    old = int(ls.redis.time()[0] * 1000) - 60_000
    pipe = ls.redis.pipeline()
    pipe.hset(epoch_key, mapping={"run_id": "run-id-of-another-life", "mark": 1})
    for node_id in node_ids:
        pipe.hset(pk.node(node_id), "seen", old)
        pipe.zadd(pk.alive, {node_id: old})
    pipe.execute()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


@pytest.fixture
def on_own_redis(make_server: ServerFactory, own_redis: EmbeddedRedis) -> tuple[Harness, str]:
    """A server on the test's own Redis (to kill or freeze) with node gpu-1 registered; its boot."""
    ls = make_server(url=own_redis.url)
    boot, _ = ls.register("gpu-1")
    return ls, boot


def _readiness(ls: Harness) -> int:
    name = SERVICE_NAMES[0]
    return ls.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2).status  # type: ignore[no-any-return]


@pytest.mark.single_redis
def test_redis_killed_gives_unavailable_then_recovers(
    on_own_redis: tuple[Harness, str], own_redis: EmbeddedRedis
) -> None:
    ls, boot = on_own_redis
    wait_for(lambda: _readiness(ls) == health_pb2.HealthCheckResponse.SERVING)

    own_redis.kill()

    for call in (
        lambda: ls.beat("gpu-1", boot, seq=1),
        lambda: ls.get("gpu-1"),
        lambda: ls.register("gpu-2"),
        lambda: ls.nodes.CountNodes(ns.CountNodesRequest(env="test"), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # before the client's deadline
        assert error_reason(err.value) == "REDIS_UNAVAILABLE"
    wait_for(lambda: _readiness(ls) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=3)
    overall = ls.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
    assert overall == health_pb2.HealthCheckResponse.SERVING  # liveness never flips with Redis

    own_redis.start()  # empty, on the same port

    wait_for(lambda: _readiness(ls) == health_pb2.HealthCheckResponse.SERVING, timeout=3)
    assert ls.beat("gpu-1", boot, seq=2).resync_required
    ls.register("gpu-1", boot_id=boot)
    assert ls.liveness("gpu-1") == ONLINE


@pytest.mark.single_redis
def test_frozen_redis_gives_unavailable_within_deadline(
    on_own_redis: tuple[Harness, str], own_redis: EmbeddedRedis
) -> None:
    ls, boot = on_own_redis
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        for call in (
            lambda: ls.heartbeat.Beat(
                hb.BeatRequest(node_id="gpu-1", boot_id=boot, seq=1, state=IDLE), timeout=5
            ),
            lambda: ls.get("gpu-1"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            # The server's UNAVAILABLE, not the client's DEADLINE_EXCEEDED: it did not hang on Redis.
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A short client deadline is honoured too.
        with pytest.raises(grpc.RpcError) as err:
            ls.heartbeat.Beat(hb.BeatRequest(node_id="gpu-1", boot_id=boot, seq=2, state=IDLE), timeout=0.3)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)

    # The node's beats could not land while Redis was frozen; that silence is not its fault.
    wait_for(lambda: _try_beat(ls, boot), timeout=3)
    assert ls.liveness("gpu-1") == ONLINE
    assert not [e for e in ls.events() if e["type"] in ("2", "3")]


def _try_beat(ls: Harness, boot: str) -> bool:
    try:
        return not ls.beat("gpu-1", boot, seq=10).resync_required
    except grpc.RpcError:
        return False


@pytest.mark.single_redis
def test_server_starts_while_redis_is_down_and_serves_once_it_is_up(make_server: ServerFactory) -> None:
    down = EmbeddedRedis()  # not started: nothing listens on its port
    ls = make_server(url=down.url)
    with pytest.raises(grpc.RpcError) as err:
        ls.register("gpu-1")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    down.start()
    try:
        wait_for(lambda: _readiness(ls) == health_pb2.HealthCheckResponse.SERVING, timeout=3)
        ls.heartbeat.Register(hb.RegisterRequest(node=spec("gpu-1"), boot_id="b1"), timeout=5)
        assert ls.liveness("gpu-1") == ONLINE
    finally:
        down.stop()


def test_deleted_locator_cache_entry_is_not_trusted_after_flush(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.redis.flushdb()
    assert ls.beat("gpu-1", boot, seq=1).resync_required
    with pytest.raises(grpc.RpcError) as err:
        ls.get("gpu-1")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    ls.register("gpu-1", boot_id=boot)
    assert ls.get("gpu-1").liveness == ONLINE
    assert ls.get("gpu-1").liveness != OFFLINE


def test_a_node_recorded_in_an_older_epoch_is_not_matched_until_it_registers_again(ls: Harness) -> None:
    # What a process coming back to a Redis it left sees (fallback.py): every record there is
    # from before, and its agent may be running jobs this state never heard of.
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=1)
    ls.release(ls.match("job-1").lease)
    ls.server.rt.epoch.enter(int(time.time() * 1000) + 1)

    with pytest.raises(grpc.RpcError) as stale:
        ls.match("job-2")
    assert stale.value.code() == grpc.StatusCode.NOT_FOUND
    assert ls.beat("gpu-1", boot, seq=2).resync_required
    ls.register("gpu-1", boot_id=boot)
    assert ls.match("job-2").lease.node_id == "gpu-1"


# -- one partition's state lost while the global epoch carries on (a Redis Cluster shard) --------


def _partition_seen(ls: Harness, partition: Partition) -> Callable[[], bool]:
    """True once a maintenance tick has read the partition's epoch: from then on the process
    notices the partition losing its state."""
    return lambda: ls.server.rt.epoch.partition_seen(partition)[0] > 0


def test_a_partition_wiped_alone_reports_its_waiting_jobs_lost(ls: Harness) -> None:
    partition = Partition("test", "eu-west")
    before = enqueue(ls, "job-1", regions=["eu-west"]).epoch
    wait_for(_partition_seen(ls, partition))
    pk = ls.server.rt.keys.partition(partition)
    # A shard wiped on a cluster: every key of the partition gone, the global keys kept.
    doomed = list(ls.redis.scan_iter(match=pk.base + "*"))
    assert pk.epoch in doomed and ls.server.rt.keys.epoch not in doomed
    ls.redis.delete(*doomed)

    def lost() -> bool:
        got = ls.queue.GetQueue(
            qpb.GetQueueRequest(env="test", model="llama-3-8b", known_epoch=before), timeout=5
        )
        return bool(got.queue_lost)

    wait_for(lost)
    again = enqueue(ls, "job-2", regions=["eu-west"], known_epoch=before)
    assert again.queue_lost and again.epoch > before


def test_a_partition_restored_from_an_older_snapshot_resyncs_its_agents(ls: Harness) -> None:
    rt = ls.server.rt
    with Agents(ls, 10) as agents:
        wait_for(lambda: len(ls.events()) >= 10)
        partition = rt.locator.lookup("agent-0")
        assert partition is not None
        pk = rt.keys.partition(partition)
        wait_for(lambda: rt.epoch.partition_seen(partition)[1] > 3)
        # One shard back from an old RDB, while the global epoch (on another shard) saw nothing.
        _as_if_back_from_an_old_snapshot(ls, pk.epoch, pk, agents.boots)

        wait_for(lambda: all(agents.resyncs.values()), timeout=3)
        time.sleep(ls.config.offline_after + 0.3)
        assert all(ls.liveness(n) == ONLINE for n in agents.boots)
    assert not [e for e in ls.events() if e["type"] in ("2", "3")]
