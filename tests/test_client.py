"""The Python client helpers against a real server."""

from __future__ import annotations

import threading

from harness import BUSY, ONLINE, Harness, spec, wait_for
from livestate.client import NodeAgent, Reading


def test_node_agent_beats_and_survives_a_redis_flush(ls: Harness) -> None:
    agent = NodeAgent(ls.channel, spec("agent-1"))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop, lambda: Reading(state=BUSY, running_jobs=2)))
    thread.start()
    try:
        wait_for(lambda: agent.seq >= 3)
        node = ls.get("agent-1")
        assert (node.liveness, node.state, node.running_jobs) == (ONLINE, BUSY, 2)

        ls.redis.flushdb()

        wait_for(lambda: agent.registrations >= 2, timeout=2 * ls.config.heartbeat_interval + 1)
        wait_for(lambda: _online(ls, "agent-1"))
    finally:
        stop.set()
        thread.join()
    assert agent.interval == ls.config.heartbeat_interval


def test_node_agent_unary_beat_re_registers_when_told(ls: Harness) -> None:
    agent = NodeAgent(ls.channel, spec("agent-2"))
    agent.register()
    ls.redis.flushdb()

    response = agent.beat()

    assert not response.resync_required
    assert agent.registrations == 2
    assert ls.get("agent-2").liveness == ONLINE
    agent.deregister()


def _online(ls: Harness, node_id: str) -> bool:
    try:
        return ls.get(node_id).liveness == ONLINE
    except Exception:
        return False
