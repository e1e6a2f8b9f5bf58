"""The committed bench report: `make bench FULL=1` writes bench/results/<date>.json (every figure,
machine, versions, settings) and <date>.md (the same as tables, each figure beside its same-run
ceiling or floor and the ratio)."""

from __future__ import annotations

import datetime
import json
import os
import platform
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


def write(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / datetime.date.today().isoformat()
    as_json, as_md = stem.with_suffix(".json"), stem.with_suffix(".md")
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
        "## Redis memory per registered node (target <= 1 KB)",
        "",
        "Redis used_memory grown over the empty instance, per node; nodes registered through the "
        "Register RPC (1-2 models, 1 label), none beating.",
        "",
        "| nodes | bytes per node |",
        "|---|---|",
        *(f"| {x['nodes']:,} | {x['grown_per_node']:,.0f} |" for x in r["memory"]),
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
