"""The committed bench report: `make bench FULL=1` writes bench/results/<date>.json (every figure,
machine, versions, settings) and <date>.md (the same as tables, each figure beside its same-run
ceiling or floor and the ratio)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def machine(server_info: dict[str, Any]) -> dict[str, Any]:
    """What ran the bench: CPU, cores, kernel, and the versions of everything on the path."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "grpcio": metadata.version("grpcio"),
        "protobuf": metadata.version("protobuf"),
        "redis_py": metadata.version("redis"),
        "redis_server": server_info.get("valkey_version") or server_info.get("redis_version"),
        "livestate_commit": commit,
    }


def stem(results: dict[str, Any]) -> str:
    """<date>-<cores>c-<cpu>: runs on different machines the same day keep a report each."""
    m = results["machine"]
    cpu = re.sub(r"\(r\)|\(tm\)|processor|cpu", "", str(m["cpu"]).lower())
    slug = "-".join(re.findall(r"[a-z0-9]+", cpu)[:3]) or "cpu"
    return f"{results.get('date') or datetime.date.today().isoformat()}-{m['cores']}c-{slug}"


def write(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem_path = directory / stem(results)
    as_json, as_md = stem_path.with_suffix(".json"), stem_path.with_suffix(".md")
    as_json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    as_md.write_text(markdown(results))
    return as_json, as_md


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def markdown(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["settings"]
    out = [
        f"# livestate bench, {r['date']}",
        "",
        f"`make bench FULL=1` at commit {m['livestate_commit']}. One machine runs the server, Redis and "
        "every load generator, so the generators take cores the server would otherwise have; each "
        "figure stands beside a reference measured in the same run.",
        "",
        *_targets(r),
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in m.items()),
        "",
        "## Settings",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in s.items()),
        "",
        "## Ceilings and closed loops",
        "",
        "| figure | livestate | same-run reference | ratio | target |",
        "|---|---|---|---|---|",
    ]
    c = r["closed_loop"]
    out += [
        f"| Heartbeat ping-pong, {s['streams']} streams | {_f(c['heartbeat']['beats_per_s'], 0)} beats/s "
        f"| bare threaded stream {_f(c['bare_stream']['beats_per_s'], 0)} msg/s | "
        f"{c['heartbeat_ratio']:.2f} | >= 0.60 |",
        f"| Match + Release, {s['workers']} callers | {_f(c['match']['matches_per_s'], 0)} pairs/s "
        f"(p50 {_f(c['match']['p50_ms'], 2)} ms, p99 {_f(c['match']['p99_ms'], 2)} ms) | same server's "
        f"health Check {_f(c['health']['calls_per_s'], 0)} calls/s | {c['pair_ratio']:.2f} | >= 0.30 |",
        f"| Match + Release, {s['workers']} callers | {_f(c['match']['matches_per_s'], 0)} pairs/s | bare "
        f"threaded unary {_f(c['bare_unary']['matches_per_s'], 0)} calls/s | {c['match_ratio']:.2f} | |",
        *_pair_cost(c),
        "",
        "## Heartbeat fleets (paced, arrivals spread)",
        "",
        f"Agents beat every {s['interval']:g} s. CPU per beat is the server's (all its processes) over "
        "a run of beats alone; the bare threaded stream server is its reference. The Match columns "
        f"come from a second run with a scheduler at {s['match_rate']:g} Match/s; the bare grpc.aio "
        "server (fixed answers) is the latency floor.",
        "",
        "| streams | server | beats/s | ack p50 / p99 / max (ms) | CPU per beat (us) | ratio (target <= 1.5) "
        "| KB per stream | Match p50 / p99 / max (ms) | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in r["fleets"]:
        for name, beats, matched in f["rows"]:
            ratio = beats["cpu_us_per_beat"] / f["bare"]["cpu_us_per_beat"]
            errors = {**beats["errors"], **matched.get("match_errors", {})} or "none"
            match = (
                f"{_f(matched['match_p50_ms'])} / {_f(matched['match_p99_ms'])} / "
                f"{_f(matched['match_max_ms'])}"
                if "match_p50_ms" in matched
                else "-"
            )
            out.append(
                f"| {f['streams']:,} | {name} | {_f(beats['beats_per_s'], 0)} | {_f(beats['ack_p50_ms'])} / "
                f"{_f(beats['ack_p99_ms'])} / {_f(beats['ack_max_ms'])} | "
                f"{_f(beats['cpu_us_per_beat'], 0)} "
                f"| {ratio:.2f} | {_f(beats['rss_kb_per_stream'])} | {match} | {errors} |"
            )
    out += [
        "",
        f"## Match open loop while {s['match_fleet']:,} agents stream",
        "",
        "Match n leaves at start + n / rate whatever is in flight, then its lease is released.",
        "",
        "| processes | offered/s | answered | p50 / p99 / p999 / max (ms) | errors | ack p99 (ms) "
        "| server cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in r["open_loop"]:
        out.append(
            f"| {o['processes']} | {o['rate']:,.0f} | {o['matches'] / max(1, o['offered']):.1%} | "
            f"{_f(o['match_p50_ms'])} / {_f(o['match_p99_ms'])} / {_f(o['match_p999_ms'])} / "
            f"{_f(o['match_max_ms'])} | {o['match_errors'] or 'none'} | {_f(o['ack_p99_ms'])} | "
            f"{o['cpu_cores']:.2f} |"
        )
    out += [
        "",
        "## Bursts of simultaneous Matches (no fleet)",
        "",
        "| burst | bursts | Match p50 / p99 / max (ms) | whole burst p50 (ms) | errors |",
        "|---|---|---|---|---|",
        *(
            f"| {b['size']} | {b['rounds']} | {_f(b['p50_ms'])} / {_f(b['p99_ms'])} / {_f(b['max_ms'])} | "
            f"{_f(b['burst_p50_ms'])} | {b['errors'] or 'none'} |"
            for b in r["bursts"]
        ),
        "",
        *_dispatch(r.get("dispatch")),
        *_prelude(r.get("prelude")),
        *_memory(r["memory"]),
    ]
    if r.get("liveness"):
        v = r["liveness"]
        out += [
            "",
            f"## From the last beat to SUSPECT and OFFLINE ({v['nodes']:,} nodes)",
            "",
            f"suspect_after {v['suspect_after_s']:g} s, offline_after {v['offline_after_s']:g} s; the lag "
            "past each deadline (the sweep runs every 0.5 s).",
            "",
            "| stage | seen | lag p50 / p99 / max (ms) |",
            "|---|---|---|",
            *(
                f"| {stage.upper()} | {v[stage + '_seen']:,} | {_f(v[stage + '_lag_p50_ms'], 0)} / "
                f"{_f(v[stage + '_lag_p99_ms'], 0)} / {_f(v[stage + '_lag_max_ms'], 0)} |"
                for stage in ("suspect", "offline")
            ),
        ]
    return "\n".join(out) + "\n"


# What would move a missed target, from the profiles below (kept beside the figures they read).
MOVES = {
    "pair": "A pair is two RPCs and four script calls (match; settle, as the job's record lives in "
    "a slot of its own; release; and the deferred clear of the record's copy of the lease), while a "
    "health Check is one RPC that touches no Redis. Both loops share the two cores with Redis and "
    "the load generator, so a pair costs the server's CPU and Redis's (the table below). In the "
    "server's profile, grpc.aio's Cython callbacks and the C under them, socket I/O and grpc core's "
    "threads take most busy samples and are paid per RPC; the 'livestate' row is what our own Python "
    "costs. What would move it: less Lua work per script (match.lua and release.lua read and rewrite "
    "the node, the lease and the indexes of the partition), fewer event-loop wake-ups per RPC, a "
    "cheaper decode of the answers; a second process adds pairs per second only where a core is free.",
    "open": "Match latency at an offered rate is a matter of free CPU. The fleet's beats, the "
    "Matches, Redis and the load generators (the 2,000 agent streams and the scheduler run in "
    "processes of their own) share the two cores; once the server's cores in the table plus Redis "
    "and the generators reach two, requests queue and p99 is that queue. The 'server cores' "
    "column and the CPU per pair below say how close this machine is; what moves it is the CPU "
    "per pair (see pair) and per beat, or a machine with the cores the generators take.",
    "beat-cpu": "A small fleet: each server process pays fixed costs whatever the beats (paced "
    "garbage collection every 0.1 s, epoch refreshes, sweeps), a larger share of 250 beats/s than "
    "of 1,000, and fewer beats share each Redis write; a second process doubles the fixed part, and "
    "the run's host steal (printed by make bench) adds noise. The ratio holds from 2,000 streams "
    "up, where a fleet needs the capacity; below that the absolute cost is a tenth of a core.",
    "memory": "The per-kind table below: the node record is a third; the model index and the two "
    "idle queues (all queued nodes, and the same nodes by VRAM class) are a zset entry each per "
    "model served. Folding the all-VRAM idle queue into the VRAM-class queues (a match merges the "
    "heads of a model's classes) removes one entry per model; folding the per-node locator "
    "strings into hashes bucketed by node id removes a key and its expiry per node.",
}


def _targets(r: dict[str, Any]) -> list[str]:
    """Every target with its figure and whether it holds; a miss points at what limits it."""
    c = r["closed_loop"]
    rows = [
        (
            "Heartbeat ping-pong / bare threaded stream",
            ">= 0.60",
            c["heartbeat_ratio"],
            c["heartbeat_ratio"] >= 0.60,
            "",
        ),
        (
            "Match + Release pairs / health Checks",
            ">= 0.30",
            c["pair_ratio"],
            c["pair_ratio"] >= 0.30,
            "pair",
        ),
    ]
    for f in r["fleets"]:
        for name, beats, _ in f["rows"][2:]:
            ratio = beats["cpu_us_per_beat"] / f["bare"]["cpu_us_per_beat"]
            rows.append(
                (f"CPU per beat / bare, {f['streams']:,} streams, {name}", "<= 1.5", ratio, ratio <= 1.5, "")
            )
    for o in r["open_loop"]:
        if o["rate"] == 500:
            p99 = o["match_p99_ms"]
            rows.append(
                (
                    f"Match p99 at 500/s offered, {o['processes']} process(es) (ms)",
                    "<= 10",
                    p99,
                    p99 <= 10,
                    "",
                )
            )
    for m in r["memory"]:
        for label, value in (
            ("grown over empty", m["grown_per_node"]),
            ("per node added", m.get("slope_per_node")),
        ):
            if value is not None:
                rows.append(
                    (
                        f"Redis bytes per node, {m['nodes']:,} nodes, {label}",
                        "<= 1,024",
                        value,
                        value <= 1024,
                        "memory",
                    )
                )
    out = ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    out += [
        f"| {name} | {goal} | {value:,.2f} | {'yes' if met else 'no'} |" for name, goal, value, met, _ in rows
    ]
    missed = dict.fromkeys(key for *_, met, key in rows if not met and key)
    for key in missed:
        out += ["", f"**Missed: what limits it and what would move it ({key}).** {MOVES[key]}"]
    return [*out, ""]


def _metered(c: dict[str, Any], pair: dict[str, float]) -> list[str]:
    metered, match = c.get("metered_cost"), c.get("match")
    if not metered or not c.get("match_metered") or not match:
        return []
    rate = c["match_metered"]["matches_per_s"] / match["matches_per_s"]
    return [
        f"| Match + Release pair, `--metrics-listen` on | {_f(metered['server_us'], 0)} "
        f"({_f(metered['server_us'] / pair['server_us'], 2)}x; pairs/s {_f(rate, 2)} of without) "
        f"| {_f(metered['redis_us'], 0)} |",
    ]


def _pair_cost(c: dict[str, Any]) -> list[str]:
    pair, check = c.get("pair_cost"), c.get("check_cost")
    if not pair or not check:
        return []
    out = [
        "",
        "CPU per operation in the closed loops above (server process, and Redis, over the run):",
        "",
        "| operation | server CPU (us) | Redis CPU (us) |",
        "|---|---|---|",
        f"| Match + Release pair | {_f(pair['server_us'], 0)} | {_f(pair['redis_us'], 0)} |",
        f"| health Check | {_f(check['server_us'], 0)} | {_f(check['redis_us'], 0)} |",
        *_metered(c, pair),
        "",
        f"At the ratio target (0.30) a pair may cost {_f(check['server_us'] / 0.30, 0)} us of server CPU "
        "when the server's core is what limits both loops.",
    ]
    prof = c.get("pair_profile")
    if prof:
        out += [
            "",
            f"Where a pair's server CPU goes (py-spy, {prof['samples']:,} samples during a third Match + "
            f"Release run; {prof['idle_share']:.0%} of samples were waits and are left out; C code is "
            "charged to the Python frame that called it):",
            "",
            "| part of the stack | share of busy samples |",
            "|---|---|",
            *(f"| {part} | {share:.0%} |" for part, share in prof["busy_shares"].items()),
            "",
            "The busiest livestate frames:",
            "",
            "| frame | share of busy samples |",
            "|---|---|",
            *(f"| `{leaf}` | {share:.1%} |" for leaf, share in prof["top_livestate"]),
        ]
    return out


def _dispatch(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return []
    burst, paced = d["burst"], d["paced"]
    if "skipped" in burst:
        return ["## Jobs through RabbitMQ", "", f"Skipped: {burst['skipped']}.", ""]
    return [
        "## Jobs through RabbitMQ (broker -> livestate dispatch -> livestate -> node queues)",
        "",
        f"{burst['nodes']} nodes, each releasing its lease as soon as the lease reaches its queue.",
        "",
        "| run | jobs | jobs/s | publish to node p50 / p99 (ms) | dead-lettered |",
        "|---|---|---|---|---|",
        f"| burst (all published at once) | {burst['jobs']} | {_f(burst['jobs_per_s'], 0)} | "
        f"{_f(burst['p50_ms'], 0)} / {_f(burst['p99_ms'], 0)} | {burst['dead']} |",
        f"| spread at {_f(paced['rate'], 0)}/s | {paced['jobs']} | {_f(paced['jobs_per_s'], 0)} | "
        f"{_f(paced['p50_ms'])} / {_f(paced['p99_ms'])} | {paced['dead']} |",
        "",
    ]


def _prelude(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    pair = p["pair_scripts"]
    pair_share = 100 * p["pair_helpers_us"] / p["pair_redis_us"]
    every_share = 100 * len(pair) * p["every_helper_us"] / p["pair_redis_us"]
    rows = [
        f"| {name} | {s['helpers']} of {p['helpers_total']} | {_f(s['us'], 2)} |"
        for name, s in sorted(p["scripts"].items(), key=lambda item: -item[1]["us"])
    ]
    return [
        "## The shared Lua helpers (lua/lib/)",
        "",
        "Each script is loaded with the helpers it uses (store/prelude.py), which it defines again on "
        "every call. Redis CPU per EVALSHA that the helpers add to a trivial body (INFO commandstats, "
        f"best of 3 rounds of {p['calls']:,} calls, on a Redis of its own; a bare call is "
        f"{_f(p['bare_us'], 2)} us):",
        "",
        "| script | helpers | added per call (us) |",
        "|---|---|---|",
        *rows,
        f"| (every helper) | {p['helpers_total']} of {p['helpers_total']} | {_f(p['every_helper_us'], 2)} |",
        "",
        f"A Match + Release pair makes {len(pair)} script calls ({', '.join(pair)}): their helpers cost "
        f"{_f(p['pair_helpers_us'], 2)} us, {_f(pair_share)}% of the pair's Redis CPU "
        f"({_f(p['pair_redis_us'], 0)} us) in this run; every helper in every script would be "
        f"{_f(every_share)}%.",
        "",
    ]


def _memory(sizes: list[dict[str, Any]]) -> list[str]:
    how = (
        "A fresh Redis; nodes registered through the Register RPC (1-2 models, 1 label), all ONLINE, "
        "none beating. Grown: used_memory over the empty instance, per node. Per node added: the "
        "growth between two counts, which leaves out what does not grow with the fleet (capped event "
        "streams, the script cache)."
        if sizes and "kinds_per_node" in sizes[0]
        # Reports from before the measurement kept every node ONLINE.
        else "Redis used_memory grown over the empty instance, per node; nodes registered through the "
        "Register RPC (1-2 models, 1 label), none beating, with default timings: at 100,000 most had "
        "gone OFFLINE while the rest registered, so that row counts a mostly expired fleet."
    )
    out = [
        "## Redis memory per registered node (target <= 1 KB)",
        "",
        how,
        "",
        "| nodes | grown per node (B) | per node added (B) |",
        "|---|---|---|",
        *(
            f"| {m['nodes']:,} | {_f(m['grown_per_node'], 0)} | "
            f"{_f(m['slope_per_node'], 0) if 'slope_per_node' in m else '-'} |"
            for m in sizes
        ),
    ]
    if sizes and "kinds_per_node" in sizes[0]:
        kinds = sorted(sizes[-1]["kinds_per_node"], key=lambda k: -sizes[-1]["kinds_per_node"][k])
        out += [
            "",
            "Bytes per node by kind of key (MEMORY USAGE of every key, summed, over the node count); "
            "unattributed is the keyspace's own tables, expiries and allocator slack:",
            "",
            "| key kind | " + " | ".join(f"{m['nodes']:,} nodes" for m in sizes) + " |",
            "|---|" + "---|" * len(sizes),
            *(
                f"| {kind} | " + " | ".join(_f(m["kinds_per_node"].get(kind, 0), 0) for m in sizes) + " |"
                for kind in kinds
                if max(m["kinds_per_node"].get(kind, 0) for m in sizes) >= 0.5
            ),
            "| unattributed | " + " | ".join(_f(m["unattributed_per_node"], 0) for m in sizes) + " |",
        ]
    return out
