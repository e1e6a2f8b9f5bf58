"""A Redis that is up but will not serve (out of memory, a demoted master, loading, busy with a
script, too few replicas) answers UNAVAILABLE with a reason naming the condition, never INTERNAL,
whether the refusal came to a plain command or from inside a Lua script; and the server answers
normally once the condition is lifted.

Each test hurts a Redis of its own (not the session's shared one) through a raw client.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
import redis

from conftest import ServerFactory
from harness import IDLE, Harness, error_reason, wait_for
from livestate.server.core.errors import from_redis
from livestate.server.store.embedded import EmbeddedRedis, free_port
from livestate.v1 import flag_pb2
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import node_service_pb2 as ns

# Each test breaks a Redis of its own (memory, replicas, scripts): not a cluster.
pytestmark = pytest.mark.single_redis

Call = Callable[[], object]


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


@pytest.fixture
def hurt(own_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A raw client to the test's own Redis, for CONFIG SET, REPLICAOF and the like."""
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def served(make_server: ServerFactory, own_redis: EmbeddedRedis) -> tuple[Harness, str]:
    """A livestate server on the test's own Redis with one registered node, gpu-1 (and its boot)."""
    ls = make_server(url=own_redis.url)
    boot, _ = ls.register("gpu-1")
    return ls, boot


def _calls(ls: Harness, boot: str) -> dict[str, Call]:
    """One RPC per way into Redis: a pipeline of plain commands first (Register), a script
    first (SetFlag on a registered node), a script in the beat batcher (Beat), plain reads
    (GetNode, CountNodes), and Match."""
    seq = iter(range(1, 1_000_000))
    return {
        "Register": lambda: ls.register(f"gpu-{uuid.uuid4().hex[:8]}"),
        "SetFlag": lambda: ls.flags.SetFlag(
            fpb.SetFlagRequest(node_id="gpu-1", kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5
        ),
        "Beat": lambda: ls.heartbeat.Beat(
            hb.BeatRequest(node_id="gpu-1", boot_id=boot, seq=next(seq), state=IDLE), timeout=5
        ),
        "Match": lambda: ls.match(f"job-{uuid.uuid4().hex[:8]}"),
        "GetNode": lambda: ls.get("gpu-1"),
        "CountNodes": lambda: ls.nodes.CountNodes(ns.CountNodesRequest(env="test"), timeout=5),
    }


def _resume_token(positions: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions).encode()).decode().rstrip("=")


def _assert_unavailable(name: str, call: Call, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    # UNAVAILABLE from the server, before the client's own deadline (DEADLINE_EXCEEDED) ran out.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (name, err.value.code(), err.value.details())
    assert error_reason(err.value) == reason, (name, err.value.details())


def _answers_busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.exceptions.BusyLoadingError:
        return False
    except redis.exceptions.ResponseError as exc:
        return "BUSY" in str(exc).split(" ", 1)[0]
    return False


def _assert_serves(ls: Harness, boot: str) -> None:
    calls = _calls(ls, boot)
    for name in ("GetNode", "CountNodes", "Register", "SetFlag", "Beat"):
        calls[name]()
    ls.flags.ClearFlag(fpb.ClearFlagRequest(node_id="gpu-1", kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5)


def _writes_refused_until_undone(
    served: tuple[Harness, str], names: tuple[str, ...], reason: str, undo: Callable[[], object]
) -> None:
    """Each call in `names` answers UNAVAILABLE with `reason` while reads still serve; once the
    condition is undone, everything serves again."""
    ls, boot = served
    calls = _calls(ls, boot)
    try:
        for name in names:
            _assert_unavailable(name, calls[name], reason)
        ls.get("gpu-1")  # a read needs no memory, no replica, no write access
    finally:
        undo()
    _assert_serves(ls, boot)


def test_out_of_memory_is_unavailable_redis_oom(served: tuple[Harness, str], hurt: redis.Redis) -> None:
    hurt.config_set("maxmemory-policy", "noeviction")
    hurt.config_set("maxmemory", "1")
    undo = functools.partial(hurt.config_set, "maxmemory", "0")
    _writes_refused_until_undone(served, ("Register", "SetFlag", "Beat", "Match"), "REDIS_OOM", undo)


def test_too_few_replicas_is_unavailable_redis_noreplicas(
    served: tuple[Harness, str], hurt: redis.Redis
) -> None:
    hurt.config_set("min-replicas-to-write", "1")
    undo = functools.partial(hurt.config_set, "min-replicas-to-write", "0")
    _writes_refused_until_undone(served, ("Register", "SetFlag", "Beat"), "REDIS_NOREPLICAS", undo)


def test_demoted_master_is_unavailable_redis_readonly(served: tuple[Harness, str], hurt: redis.Redis) -> None:
    """A master turned replica (its new master unreachable) still serves stale reads; every write,
    inside a script or not, is refused READONLY."""
    hurt.replicaof("127.0.0.1", free_port())
    undo = functools.partial(hurt.replicaof, "NO", "ONE")
    _writes_refused_until_undone(served, ("Register", "SetFlag", "Beat"), "REDIS_READONLY", undo)


def test_replica_without_its_master_is_unavailable_redis_masterdown(
    served: tuple[Harness, str], hurt: redis.Redis
) -> None:
    ls, boot = served
    calls = _calls(ls, boot)
    hurt.config_set("replica-serve-stale-data", "no")
    hurt.replicaof("127.0.0.1", free_port())
    try:
        for name in ("GetNode", "CountNodes", "Beat", "SetFlag"):
            _assert_unavailable(name, calls[name], "REDIS_MASTERDOWN")
        # Resuming a watch reads its streams first: unreadable is not trimmed (OUT_OF_RANGE).
        resume = ns.WatchRequest(resume_token=_resume_token({"test/eu-west/0": "1-0"}))
        _assert_unavailable("Watch", lambda: list(ls.nodes.Watch(resume, timeout=5)), "REDIS_MASTERDOWN")
    finally:
        hurt.replicaof("NO", "ONE")
        hurt.config_set("replica-serve-stale-data", "yes")
    _assert_serves(ls, boot)


def test_redis_busy_with_a_script_is_unavailable_redis_busy(
    served: tuple[Harness, str], hurt: redis.Redis, own_redis: EmbeddedRedis
) -> None:
    ls, boot = served
    calls = _calls(ls, boot)
    hurt.config_set("busy-reply-threshold", "50")  # ms before Redis answers BUSY to others
    looping = redis.Redis.from_url(own_redis.url)
    killed: list[BaseException] = []

    def loop() -> None:
        try:
            looping.eval("while true do end", 0)
        except redis.exceptions.ResponseError as exc:  # "Script killed by user"
            killed.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        wait_for(lambda: _answers_busy(hurt))  # the script has run past busy-reply-threshold
        for name in ("GetNode", "Beat", "Register", "SetFlag"):
            _assert_unavailable(name, calls[name], "REDIS_BUSY")
    finally:
        for _ in range(50):
            with contextlib.suppress(redis.exceptions.ResponseError):  # NOTBUSY: not started yet
                hurt.script_kill()
            thread.join(timeout=0.1)
            if not thread.is_alive():
                break
        looping.close()
    assert killed
    _assert_serves(ls, boot)


def test_loading_replica_is_unavailable_redis_loading(served: tuple[Harness, str], hurt: redis.Redis) -> None:
    """A replica loading its master's snapshot answers LOADING until it is done. Loading is made
    slow (a delay per key, events served every KB) so the window can be seen."""
    ls, _ = served
    with EmbeddedRedis() as master:
        filler = redis.Redis.from_url(master.url)
        filler.config_set("repl-diskless-sync-delay", "0")
        pipe = filler.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"filler:{i}", "x" * 32)
        pipe.execute()
        filler.close()
        hurt.config_set("key-load-delay", "500")  # microseconds per key
        hurt.config_set("loading-process-events-interval-bytes", "1024")
        hurt.replicaof("127.0.0.1", master.port)
        reasons: set[str | None] = set()
        try:
            deadline = time.monotonic() + 10
            while "REDIS_LOADING" not in reasons and time.monotonic() < deadline:
                try:
                    ls.nodes.ListNodes(ns.ListNodesRequest(), timeout=5)
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                    reasons.add(error_reason(err))
                time.sleep(0.02)
            assert "REDIS_LOADING" in reasons
            deadline = time.monotonic() + 10
            while hurt.info("persistence")["loading"] and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            hurt.replicaof("NO", "ONE")
            hurt.config_set("key-load-delay", "0")
    # The replica took its master's data: this server's state is gone, and it says so.
    boot, _ = ls.register("gpu-1")
    _assert_serves(ls, boot)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        # What redis-py makes of each refusal: a class of its own (code stripped) or a plain
        # ResponseError that keeps the code, sometimes inside a pipeline's annotation.
        (
            redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
            "REDIS_OOM",
        ),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), "REDIS_READONLY"),
        (redis.exceptions.BusyLoadingError("Valkey is loading the dataset in memory"), "REDIS_LOADING"),
        (redis.exceptions.ResponseError("LOADING Redis is loading the dataset in memory"), "REDIS_LOADING"),
        (redis.exceptions.MasterDownError("Link with MASTER is down"), "REDIS_MASTERDOWN"),
        (redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"), "REDIS_MASTERDOWN"),
        (redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."), "REDIS_NOREPLICAS"),
        (
            redis.exceptions.ResponseError(
                "NOREPLICAS Not enough good replicas to write. script: on @user_script:1."
            ),
            "REDIS_NOREPLICAS",
        ),
        (redis.exceptions.ResponseError("BUSY Redis is busy running a script."), "REDIS_BUSY"),
        (
            redis.exceptions.ResponseError(
                "Command # 2 (EVALSHA ab12 1 k) of pipeline caused error: "
                "BUSY Valkey is busy running a script."
            ),
            "REDIS_BUSY",
        ),
        (
            # Redis 6 and older wrap an error raised inside a script.
            redis.exceptions.ResponseError(
                "Error running script (call to f_ab12): @user_script:12: @user_script: 12: "
                "-OOM command not allowed when used memory > 'maxmemory'."
            ),
            "REDIS_OOM",
        ),
        (
            redis.exceptions.ResponseError(
                "Error running script (call to f_ab12): @user_script:3: "
                "READONLY You can't write against a read only replica."
            ),
            "REDIS_READONLY",
        ),
        (redis.exceptions.ConnectionError("Connection refused"), "REDIS_UNAVAILABLE"),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), "REDIS_UNAVAILABLE"),
        (redis.exceptions.ClusterDownError("The cluster is down"), "REDIS_UNAVAILABLE"),
        (redis.exceptions.TryAgainError("Multiple keys request during rehashing"), "REDIS_UNAVAILABLE"),
    ],
)
def test_refusals_map_to_their_condition(exc: redis.exceptions.RedisError, reason: str) -> None:
    err = from_redis(exc)
    assert err is not None
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.reason == reason


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ResponseError("BUSYKEY Target key name already exists."),
        redis.exceptions.ResponseError("BUSYGROUP Consumer Group name already exists"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.exceptions.ResponseError("user_script:504: attempt to perform arithmetic on a nil value"),
        redis.exceptions.ResponseError("ERR value is not an integer or out of range"),
        redis.exceptions.ResponseError(
            "Command # 1 (SET k OOM) of pipeline caused error: WRONGTYPE Operation against a key"
        ),
    ],
)
def test_other_errors_are_not_taken_for_a_refusal(exc: redis.exceptions.RedisError) -> None:
    assert from_redis(exc) is None
