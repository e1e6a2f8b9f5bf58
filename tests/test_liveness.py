"""Liveness by deadline: ONLINE -> SUSPECT -> OFFLINE -> forgotten, driven by the sweeper."""

from __future__ import annotations

import time

from conftest import ServerFactory
from harness import OFFLINE, ONLINE, SUSPECT, Harness, wait_for


def _sweeper_liveness(ls: Harness, node_id: str) -> str | None:
    """What the sweeper has recorded (not derived at read time)."""
    pk = ls.server.rt.keys.partition(ls.server.rt.locator.lookup(node_id))  # type: ignore[arg-type]
    return ls.redis.hget(pk.node(node_id), "live")  # type: ignore[return-value]


def test_silent_node_goes_suspect_then_offline_within_deadline_plus_one_second(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=1)
    last_beat = time.monotonic()

    wait_for(lambda: _sweeper_liveness(ls, "gpu-1") == "2", timeout=ls.config.suspect_after + 1)
    suspect_at = time.monotonic() - last_beat
    assert ls.liveness("gpu-1") == SUSPECT
    wait_for(lambda: _sweeper_liveness(ls, "gpu-1") == "3", timeout=ls.config.offline_after + 1)
    offline_at = time.monotonic() - last_beat
    assert ls.liveness("gpu-1") == OFFLINE

    assert ls.config.suspect_after <= suspect_at + 0.05 < ls.config.suspect_after + 1
    assert ls.config.offline_after <= offline_at + 0.05 < ls.config.offline_after + 1
    types = [e["type"] for e in ls.events()]
    assert types == ["1", "2", "3"]  # online, suspect, offline: each once


def test_reads_derive_liveness_before_any_sweep(make_server: ServerFactory) -> None:
    # A sweeper that effectively never runs: reads must still see the deadline pass.
    ls = make_server(sweep_interval=3600)
    ls.register("gpu-1")

    wait_for(lambda: ls.liveness("gpu-1") == SUSPECT, timeout=ls.config.suspect_after + 1)
    wait_for(lambda: ls.liveness("gpu-1") == OFFLINE, timeout=ls.config.offline_after + 1)


def test_beat_after_offline_deadline_requires_resync_even_before_sweep(make_server: ServerFactory) -> None:
    ls = make_server(sweep_interval=3600)
    boot, _ = ls.register("gpu-1")
    wait_for(lambda: ls.liveness("gpu-1") == OFFLINE, timeout=3)

    assert ls.beat("gpu-1", boot, seq=1).resync_required


def test_suspect_node_that_beats_again_is_online(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    wait_for(lambda: _sweeper_liveness(ls, "gpu-1") == "2", timeout=2)

    assert not ls.beat("gpu-1", boot, seq=1).resync_required

    assert ls.liveness("gpu-1") == ONLINE
    assert _sweeper_liveness(ls, "gpu-1") == "1"
    assert [e["detail"] for e in ls.events()][-1] == "recovered"


def test_offline_node_must_register_again(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    wait_for(lambda: _sweeper_liveness(ls, "gpu-1") == "3", timeout=3)

    assert ls.beat("gpu-1", boot, seq=1).resync_required
    ls.register("gpu-1", boot_id=boot)
    assert ls.liveness("gpu-1") == ONLINE


def test_offline_node_is_forgotten_after_retention(ls: Harness) -> None:
    ls.register("gpu-1")
    rt = ls.server.rt
    pk = rt.keys.partition(rt.locator.lookup("gpu-1"))  # type: ignore[arg-type]
    wait_for(lambda: _sweeper_liveness(ls, "gpu-1") == "3", timeout=5)
    assert ls.get("gpu-1").liveness == OFFLINE  # still visible during retention

    wait_for(lambda: not ls.redis.exists(pk.node("gpu-1")), timeout=ls.config.retention + 4)

    assert not ls.redis.exists(rt.keys.locator("gpu-1"))
    for key in (pk.alive, pk.suspect, pk.offline, pk.nodes, pk.model_index("llama-3-8b")):
        assert ls.redis.zscore(key, "gpu-1") is None


def test_abandoned_state_carries_ttls(ls: Harness) -> None:
    ls.register("gpu-1")
    rt = ls.server.rt
    pk = rt.keys.partition(rt.locator.lookup("gpu-1"))  # type: ignore[arg-type]
    for key in (
        pk.node("gpu-1"),
        rt.keys.locator("gpu-1"),
        pk.alive,
        pk.nodes,
        pk.models,
        pk.model_index("llama-3-8b"),
        pk.events,
    ):
        assert ls.redis.pttl(key) > 0, key


def test_two_servers_sweeping_at_once_move_each_node_once(make_server: ServerFactory) -> None:
    a = make_server(sweep_interval=0.01)
    b = make_server(sweep_interval=0.01)
    for i in range(50):
        a.register(f"gpu-{i}")

    wait_for(lambda: all(b.liveness(f"gpu-{i}") == OFFLINE for i in range(50)), timeout=4)
    wait_for(lambda: len([e for e in a.events() if e["type"] == "3"]) == 50, timeout=2)

    types = [e["type"] for e in a.events()]
    assert types.count("1") == 50
    assert types.count("2") == 50
    assert types.count("3") == 50


def test_sweep_is_bounded_per_call_yet_drains_everything(make_server: ServerFactory) -> None:
    ls = make_server(sweep_batch=7)
    for i in range(40):
        ls.register(f"gpu-{i}")

    wait_for(lambda: all(_sweeper_liveness(ls, f"gpu-{i}") == "3" for i in range(40)), timeout=4)
