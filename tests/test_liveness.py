"""Liveness by deadline: ONLINE -> SUSPECT -> OFFLINE -> forgotten, driven by the sweeper."""

from __future__ import annotations

import time

import redis

from conftest import ServerFactory
from harness import OFFLINE, ONLINE, SUSPECT, Harness, wait_for
from livestate.server import Config
from livestate.server.store.records import Hearing
from livestate.server.store.scripts import with_helpers


def _sweeper_liveness(ls: Harness, node_id: str) -> str | None:
    """What the sweeper has recorded (not derived at read time)."""
    pk = ls.server.rt.keys.partition(ls.server.rt.locator.lookup(node_id))  # type: ignore[arg-type]
    return ls.redis.hget(pk.node(node_id), "live")  # type: ignore[return-value]


def test_silent_node_goes_suspect_then_offline_never_before_its_deadlines(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    ls.beat("gpu-1", boot, seq=1)
    last_beat = time.monotonic()

    wait_for(lambda: _sweeper_liveness(ls, "gpu-1") == "2", timeout=ls.config.suspect_after + 1)
    suspect_at = time.monotonic() - last_beat
    assert ls.liveness("gpu-1") == SUSPECT
    wait_for(lambda: _sweeper_liveness(ls, "gpu-1") == "3", timeout=ls.config.offline_after + 1)
    offline_at = time.monotonic() - last_beat
    assert ls.liveness("gpu-1") == OFFLINE

    # Measured from after the beat's answer, so the node's last beat was earlier still.
    assert ls.config.suspect_after <= suspect_at + 0.05
    assert ls.config.offline_after <= offline_at + 0.05
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

    # The sweep forgets the node in its partition, then drops its locator (a global key, so a
    # step of its own): poll for both.
    wait_for(
        lambda: not ls.redis.exists(pk.node("gpu-1"), rt.keys.locator("gpu-1")),
        timeout=ls.config.retention + 4,
    )
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


_PROBE = """
local C = {epoch = tonumber(ARGV[1]), gap = tonumber(ARGV[2]), offline_after = tonumber(ARGV[3])}
local now, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local H = hearing(KEYS[1], now, C)
local cut = silent_before(H, now, limit)
local out = {cut and string.format('%d', cut) or 'none'}
for i = 6, #ARGV do out[#out + 1] = string.format('%d', silence(H, ARGV[i], now)) end
return out
"""


def test_the_liveness_rule_in_python_agrees_with_the_scripts(redis_client: redis.Redis) -> None:
    """records.Hearing mirrors hearing/silence in lua/lib/hearing.lua; and the sweep's one-bound cutoff
    (silent_before) picks exactly the nodes whose silence exceeds the limit."""
    probe = redis_client.register_script(with_helpers(_PROBE))
    config = Config(listen="127.0.0.1:0", heartbeat_interval=1.0, sweep_gap=2.0)  # offline_after 5 s
    now = 1_000_000
    seens = [now - d for d in (0, 500, 2_999, 3_000, 3_001, 6_000, 9_000, 20_000, 60_000)]
    metas: list[dict[str, int]] = [
        {},
        {"pulse": now - 1_000},
        {"pulse": now - 4_000},  # an outage not yet recorded
        {"pulse": now - 4_000, "ostart": now - 9_000, "oend": now - 2_000},  # forgiven too recently
        {"pulse": now - 100, "ostart": now - 12_000, "oend": now - 7_000},
        {"pulse": now - 30_000, "ostart": now - 40_000, "oend": now - 31_000},
    ]
    for epoch in (0, now - 8_000, now - 1_000):
        for meta in metas:
            for limit in (3_000, 5_000):
                redis_client.delete("probe:meta")
                if meta:
                    redis_client.hset("probe:meta", mapping={k: v for k, v in meta.items()})
                before = [str(meta[f]) if f in meta else None for f in ("pulse", "ostart", "oend")]
                hearing = Hearing.read(before, now, epoch, config)
                cut, *silences = probe(
                    keys=["probe:meta"],
                    args=[
                        epoch,
                        int(config.sweep_gap * 1000),
                        int(config.offline_after * 1000),
                        now,
                        limit,
                        *seens,
                    ],
                )
                case = (epoch, meta, limit)
                assert [int(s) for s in silences] == [hearing.silence(seen, now) for seen in seens], case
                for seen, silence in zip(seens, (int(s) for s in silences), strict=True):
                    assert (silence > limit) == (cut != "none" and seen < int(cut)), (
                        case,
                        seen,
                        silence,
                        cut,
                    )
