"""A regional Redis with a central fallback: the regional one killed under load, the process
serves from the central one; the regional one back, the process returns to it. Agents resync
once per switch, no slot is handed out twice, health names the Redis in use."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from harness import FAST, ONLINE, Harness, wait_for
from livestate.server import Config, LivestateServer

from .conftest import running_redis
from .history import History
from .load import Agents, LeaseTable, nodes_with, probe_match, steady_load
from .redisproc import RedisProc

AGENTS = 30
INTERVAL = 0.5
FALLBACK_AFTER = 1.0
RETURN_AFTER = 2.0


@pytest.fixture
def central() -> Iterator[RedisProc]:
    yield from running_redis()


@pytest.fixture
def regional_server(redisproc: RedisProc, central: RedisProc) -> Iterator[Harness]:
    settings: dict[str, Any] = {
        **FAST,
        "heartbeat_interval": INTERVAL,
        "suspect_after": 1.5,
        "offline_after": 2.5,
        "sweep_interval": 0.1,
    }
    config = Config(
        listen="127.0.0.1:0",
        redis_url=redisproc.url,
        fallback_redis_url=central.url,
        fallback_after=FALLBACK_AFTER,
        fallback_return_after=RETURN_AFTER,
        **settings,
    )
    server = LivestateServer(config)
    server.start()
    harness = Harness(server, redisproc.client())
    try:
        yield harness
    finally:
        harness.stop()


def serving_from(ls: Harness) -> str | None:
    """The Redis health names as in use: 'regional', 'central', or None (neither SERVING)."""
    for name in ("regional", "central"):
        request = health_pb2.HealthCheckRequest(service=f"livestate.redis.{name}")
        with contextlib.suppress(grpc.RpcError):
            if ls.health.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                return name
    return None


def resynced(agents: Agents, times: int) -> bool:
    return all(len(told) >= times for told in agents.resyncs.values())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_regional_redis_lost_then_back_switches_to_central_and_home_again(
    fault: str, redisproc: RedisProc, central: RedisProc, regional_server: Harness, history: History
) -> None:
    """kill: killed, then started empty. freeze: SIGSTOP, then SIGCONT with every record it had,
    which the process must not trust: its nodes have beaten elsewhere since."""
    ls = regional_server
    assert serving_from(ls) == "regional"
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents, schedulers = steady_load(stack, ls, history, table, agents=AGENTS, interval=INTERVAL)

        if fault == "kill":
            redisproc.kill()
        else:
            redisproc.freeze()
        killed = time.monotonic()
        wait_for(lambda: serving_from(ls) == "central", timeout=15, interval=0.05)
        switched = time.monotonic()
        on_central = probe_match(ls, history, table, "probe-central", within=15)
        wait_for(lambda: resynced(agents, 1), timeout=10)
        wait_for(lambda: len(nodes_with(ls, ONLINE)) == AGENTS, timeout=10)
        schedulers.grant_more(50, timeout=15)
        resyncs_on_central = {n: len(t) for n, t in agents.resyncs.items()}

        if fault == "kill":
            redisproc.start()
        else:
            redisproc.thaw()
        restarted = time.monotonic()
        wait_for(lambda: serving_from(ls) == "regional", timeout=15, interval=0.05)
        returned = time.monotonic()
        at_home = probe_match(ls, history, table, "probe-regional", within=15)
        # Frozen and thawed, the regional Redis still holds every record of before: none may be
        # trusted, every agent is told to register again.
        wait_for(lambda: resynced(agents, 2), timeout=10)
        wait_for(lambda: len(nodes_with(ls, ONLINE)) == AGENTS, timeout=10)
        schedulers.grant_more(50, timeout=15)
        schedulers.stop()
        agents.stop()

    assert ls.server.fallback is not None
    assert ls.server.fallback.switches == 2
    print(
        f"fallback ({fault}): regional lost -> central in use {switched - killed:.2f}s "
        f"(fallback_after {FALLBACK_AFTER}s), first Match {on_central - switched:.2f}s later; "
        f"regional back -> in use again {returned - restarted:.2f}s (return_after {RETURN_AFTER}s), "
        f"first Match {at_home - returned:.2f}s later"
    )
    # One resync per switch: agents were told once on the central Redis and once back home.
    assert max(resyncs_on_central.values()) == 1, resyncs_on_central
    assert min(resyncs_on_central.values()) == 1, resyncs_on_central
    totals = {n: len(t) for n, t in agents.resyncs.items()}
    assert set(totals.values()) == {2}, totals
