"""The bench's own bookkeeping: how profile samples are charged, how keys are grouped by kind,
and that the report names every missed target with what limits it."""

from __future__ import annotations

from typing import Any

from bench import memory, profile, report


def test_profile_charges_each_sample_to_its_leaf_and_leaves_waits_out() -> None:
    raw = "\n".join(
        [
            "EventLoop._run (server/edge.py:75);Handle._run (asyncio/events.py:80) 6",
            "EventLoop._run (server/edge.py:75);_Wire.send (server/batcher.py:245);"
            "_SelectorSocketTransport.write (asyncio/selector_events.py:1057) 2",
            "MatchServicer.match_on_loop (server/match_servicer.py:167) 2",
            "BaseEventLoop._run_once (asyncio/base_events.py:1922);"
            "EpollSelector.select (selectors.py:468) 10",
        ]
    )
    found = profile.summarize(raw)
    assert found["samples"] == 20
    assert found["idle_share"] == 0.5
    assert found["busy_shares"] == {
        "C under an event-loop callback (grpc.aio, protobuf)": 0.6,
        "socket I/O (asyncio transports, to Redis)": 0.2,
        "livestate": 0.2,
    }
    assert found["top_livestate"] == [("MatchServicer.match_on_loop (server/match_servicer.py:167)", 0.2)]


def test_keys_are_grouped_by_the_kind_after_the_partition_tag() -> None:
    assert memory.key_kind("ls:{bench/r1/0}:node:bench-000001", "ls") == "node"
    assert memory.key_kind("ls:{bench/r1/0}:idlev:4:llama", "ls") == "idlev"
    assert memory.key_kind("ls:loc:bench-000001", "ls") == "loc"
    assert memory.key_kind("ls:epoch", "ls") == "epoch"


def _results(pair_ratio: float, grown: float) -> dict[str, Any]:
    return {
        "closed_loop": {"heartbeat_ratio": 1.1, "pair_ratio": pair_ratio},
        "fleets": [],
        "open_loop": [{"rate": 500, "processes": 1, "match_p99_ms": 4.0}],
        "memory": [{"nodes": 10_000, "grown_per_node": grown}],
    }


def test_report_names_what_limits_each_missed_target_and_nothing_when_all_hold() -> None:
    missed = "\n".join(report._targets(_results(pair_ratio=0.2, grown=1100)))
    assert "| Match + Release pairs / health Checks | >= 0.30 | 0.20 | no |" in missed
    assert report.MOVES["pair"] in missed
    assert report.MOVES["memory"] in missed
    held = "\n".join(report._targets(_results(pair_ratio=0.35, grown=900)))
    assert "| no |" not in held
    assert "Missed" not in held


def test_the_prelude_section_sets_each_scripts_helpers_beside_a_pairs_redis_cpu() -> None:
    measured = {
        "calls": 20_000,
        "bare_us": 1.5,
        "every_helper_us": 2.5,
        "helpers_total": 40,
        "scripts": {"match": {"helpers": 20, "us": 1.5}, "settle": {"helpers": 0, "us": 0.0}},
        "pair_scripts": ["match", "settle"],
        "pair_helpers_us": 1.5,
    }

    lines = report._prelude({**measured, "pair_redis_us": 500.0})

    assert "| match | 20 of 40 | 1.50 |" in lines
    assert "| settle | 0 of 40 | 0.00 |" in lines
    assert any("their helpers cost 1.50 us, 0.3% of the pair's Redis CPU (500 us)" in line for line in lines)
    assert any("every helper in every script would be 1.0%" in line for line in lines)
    assert report._prelude(None) == []
