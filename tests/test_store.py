"""The Redis client never resends a command that timed out: a copy still queued in a frozen Redis
would run a second time when it thaws. And a unix:// URL works as well as redis://."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import grpc
import pytest
import redis

from conftest import ServerFactory
from harness import Harness, error_reason, wait_for
from livestate.server import Config
from livestate.server.store.connection import connect
from livestate.server.store.embedded import EmbeddedRedis
from livestate.v1 import lease_pb2, match_service_pb2


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


def test_a_command_that_timed_out_in_a_frozen_redis_runs_once(own_redis: EmbeddedRedis) -> None:
    client = connect(own_redis.url, Config(listen="127.0.0.1:0", redis_timeout=0.5))
    client.set("counter", 0)
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    # Thaw after the first reply timed out, while a retry (if there were one) is reconnecting: the
    # retry would then send the command again behind the queued one.
    thaw = threading.Timer(0.75, os.kill, (own_redis.proc.pid, signal.SIGCONT))
    thaw.start()
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            client.incr("counter")
    finally:
        thaw.join()
    observer = redis.Redis.from_url(own_redis.url, decode_responses=True)
    # The queued INCR runs once Redis thaws; a resent copy would make it 2.
    wait_for(lambda: observer.get("counter") == "1")
    assert observer.get("counter") == "1"
    observer.close()
    client.close()


def test_a_pooled_connection_broken_by_a_restart_is_retried(own_redis: EmbeddedRedis) -> None:
    client = connect(own_redis.url, Config(listen="127.0.0.1:0", redis_timeout=0.5))
    assert client.ping()
    own_redis.restart()
    assert client.ping()  # the dead pooled connection is replaced without an error
    client.close()


@pytest.mark.single_redis
def test_a_server_given_a_unix_socket_url_registers_beats_matches_and_releases(
    own_redis: EmbeddedRedis, make_server: ServerFactory
) -> None:
    # The pool's TCP-only options once made every call over a unix socket fail INTERNAL.
    ls = make_server(url=own_redis.unix_url)
    assert ls.server.rt.batcher is not None
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=1)

    lease = ls.match("job-1").lease  # on the event loop, through the batcher's own connection

    assert lease.node_id == "gpu-1"
    ls.match_stub.Release(
        match_service_pb2.ReleaseRequest(lease_id=lease.lease_id, fencing_token=lease.fencing_token),
        timeout=5,
    )
    assert ls.match("job-2").lease.node_id == "gpu-1"


@pytest.fixture
def replica(own_redis: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    """A second Valkey replicating own_redis, in sync before the test starts; thawed at the end."""
    with EmbeddedRedis() as embedded:
        client = redis.Redis(port=embedded.port, decode_responses=True)
        client.replicaof("127.0.0.1", own_redis.port)
        wait_for(lambda: client.info("replication").get("master_link_status") == "up", timeout=10)
        client.close()
        try:
            yield embedded
        finally:
            assert embedded.proc is not None
            os.kill(embedded.proc.pid, signal.SIGCONT)


@pytest.mark.single_redis
def test_with_ack_replicas_answers_wait_for_a_replica_and_fail_unavailable_without_one(
    own_redis: EmbeddedRedis, replica: EmbeddedRedis, make_server: ServerFactory
) -> None:
    ls = make_server(
        url=own_redis.url, ack_replicas=1, heartbeat_interval=2.0, suspect_after=30.0, offline_after=60.0
    )
    ls.register("gpu-1")
    lease = ls.match("job-1").lease  # the event loop's batcher: its batch ends with a WAIT
    ls.release(lease)  # a worker thread's redis-py client: each write is followed by a WAIT

    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        for call in (lambda: ls.match("job-2"), lambda: ls.register("gpu-2")):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(raised.value) == "REDIS_NOT_REPLICATED", raised.value.details()
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    # The claim ran on the master: the retry with the same job_id gets that lease, not another.
    again = wait_for(lambda: _matched(ls, "job-2"), timeout=10)
    assert again is not None and again.node_id == "gpu-1"


def _matched(ls: Harness, job_id: str) -> lease_pb2.Lease | None:
    try:
        return ls.match(job_id).lease
    except grpc.RpcError:
        return None
