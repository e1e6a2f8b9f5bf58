"""`make bench`: livestate heartbeat throughput as a ratio of a bare gRPC stream, same run, same machine.

Three processes per measurement: Redis (embedded Valkey), a server, and a load generator that
holds `--streams` Heartbeat streams open and ping-pongs beats on each as fast as answers come.
The baseline server answers the same messages on the same RPC path without touching Redis, so
the ratio isolates what livestate adds (validation, batching, the beat script, Redis).

Then paced agent fleets (bench/fleet.py): 500 and 2,000 streams beating every 2 s with spread
arrivals (5,000 too with FULL=1), against the bare server and livestate on 1 and 2 processes
(--fleet-processes), with server CPU per beat, memory per stream, ack latency, refusals and a
scheduler's Match latency meanwhile.

    python -m bench [--nodes 10000] [--streams 64] [--seconds 8] [--fleet 500,2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import redis

from bench import bare, dispatch, fleet, liveness, memory, prelude, procs, profile, report, unary
from bench.stats import pct_ms
from livestate.server.store.embedded import EmbeddedRedis, free_port
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import match_service_pb2_grpc as mpb_grpc
from livestate.v1 import node_pb2

HERE = Path(__file__).resolve().parent
# Matches a fleet run with a scheduler collects at least (its p99 is then the 4th worst).
MATCH_SAMPLES = 400


async def _load(target: str, node_ids: list[str], boot: str, seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = hb_grpc.HeartbeatServiceStub(channel)
        stop_at = time.monotonic() + seconds
        latencies: list[float] = []
        resyncs = 0

        async def one(node_id: str) -> int:
            nonlocal resyncs
            call = stub.Heartbeat()
            seq = 0
            while time.monotonic() < stop_at:
                seq += 1
                sent = time.perf_counter()
                await call.write(
                    hb.HeartbeatRequest(
                        node_id=node_id, boot_id=boot, seq=seq, state=node_pb2.NODE_STATE_IDLE
                    )
                )
                response = await call.read()
                latencies.append(time.perf_counter() - sent)
                resyncs += response.resync_required
            await call.done_writing()
            return seq

        started = time.monotonic()
        counts = await asyncio.gather(*(one(n) for n in node_ids))
        elapsed = time.monotonic() - started
    return {
        "beats_per_s": sum(counts) / elapsed,
        "p50_ms": pct_ms(latencies, 0.5),
        "p99_ms": pct_ms(latencies, 0.99),
        "resyncs": resyncs,
    }


async def _match_load(target: str, workers: int, seconds: float) -> dict[str, float]:
    """Closed loop: each worker matches a new job, then releases its lease."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mpb_grpc.MatchServiceStub(channel)
        stop_at = time.monotonic() + seconds
        latencies: list[float] = []
        misses = 0

        async def one(worker: int) -> None:
            nonlocal misses
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                sent = time.perf_counter()
                try:
                    response = await stub.Match(
                        mpb.MatchRequest(job_id=f"bench-{worker}-{n}", env="bench", model="llama-3-8b"),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError:
                    misses += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                await stub.Release(
                    mpb.ReleaseRequest(
                        lease_id=response.lease.lease_id, fencing_token=response.lease.fencing_token
                    ),
                    timeout=5,
                )

        started = time.monotonic()
        await asyncio.gather(*(one(w) for w in range(workers)))
        elapsed = time.monotonic() - started
    return {
        "matches_per_s": len(latencies) / elapsed,
        "p50_ms": pct_ms(latencies, 0.5),
        "p99_ms": pct_ms(latencies, 0.99),
        "misses": misses,
    }


def load_main(target: str, node_ids: list[str], boot: str, seconds: float) -> None:
    print(json.dumps(asyncio.run(_load(target, node_ids, boot, seconds))))


def _measure(port: int, node_ids: list[str], boot: str, seconds: float) -> dict[str, Any]:
    target = f"127.0.0.1:{port}"
    return _client("--load", target, "--boot", boot, "--seconds", str(seconds), "--ids", ",".join(node_ids))


def _client(*args: str) -> dict[str, Any]:
    """Runs one load generator (`python -m bench ARGS`) to its end and returns what it printed."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, check=True, cwd=HERE.parent
    )
    return dict(json.loads(out.stdout))


def _redis_cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def _costed(
    pid: int, client: redis.Redis, measure: Callable[[], dict[str, Any]], rate: str, seconds: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Runs a closed-loop measurement and charges it the server's and Redis's CPU time per
    operation: operations are the measured rate over the load's `seconds` (the generator's
    start-up and wind-down cost the server next to nothing, so this errs high by a little)."""
    server, store = procs.cpu_seconds(pid), _redis_cpu_seconds(client)
    found = measure()
    ops = max(1.0, found[rate] * seconds)
    return found, {
        "server_us": (procs.cpu_seconds(pid) - server) / ops * 1e6,
        "redis_us": (_redis_cpu_seconds(client) - store) / ops * 1e6,
    }


PAIR_ROUNDS = 3


Costed = tuple[dict[str, Any], dict[str, float]]


def _median_run(runs: list[Costed]) -> Costed:
    """The run whose rate is the median of the runs."""
    return sorted(runs, key=lambda run: float(run[0]["matches_per_s"]))[len(runs) // 2]


def _measure_match(port: int, workers: int, seconds: float) -> dict[str, Any]:
    return _client("--match-load", f"127.0.0.1:{port}", "--workers", str(workers), "--seconds", str(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--nodes", type=int, default=10_000, help="registered nodes in Redis")
    parser.add_argument("--streams", type=int, default=64, help="concurrent Heartbeat streams")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each measurement")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--boot", default="bench-boot", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare-aio", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--match-load", help=argparse.SUPPRESS)
    parser.add_argument("--health-load", help=argparse.SUPPRESS)
    parser.add_argument("--burst", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bursts", default="32,256", help="sizes of simultaneous Match bursts")
    parser.add_argument("--burst-rounds", type=int, default=20, help="bursts of each size")
    parser.add_argument("--workers", type=int, default=8, help="concurrent Match callers")
    parser.add_argument(
        "--fleet",
        default="500,2000,5000" if os.environ.get("FULL") else "500,2000",
        help="paced agent fleets to run, comma-separated stream counts (FULL=1: 5000 as well)",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="beat interval of the paced fleets")
    parser.add_argument(
        "--match-rate", type=float, default=20.0, help="Match/s a scheduler sends during a fleet"
    )
    parser.add_argument(
        "--fleet-processes", default="1,2", help="server processes (--processes) to run each fleet on"
    )
    parser.add_argument(
        "--match-rates",
        default="250,500,1000" if os.environ.get("FULL") else "500",
        help="open-loop Match/s offered (spread arrivals) while --match-fleet agents stream",
    )
    parser.add_argument(
        "--memory-nodes",
        default="10000,100000" if os.environ.get("FULL") else "10000",
        help="node counts to measure Redis memory per node at, on a fresh Redis (FULL=1: 10000,100000)",
    )
    parser.add_argument(
        "--liveness-nodes",
        type=int,
        default=5000 if os.environ.get("FULL") else 1000,
        help="nodes that stop beating, for the time to SUSPECT and OFFLINE (0: skip)",
    )
    parser.add_argument(
        "--report",
        default=str(HERE / "results") if os.environ.get("FULL") else "",
        help="directory to write <date>.json and <date>.md to (FULL=1: bench/results)",
    )
    parser.add_argument("--match-fleet", type=int, default=2000, help="agent streams during --match-rates")
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("LIVESTATE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        help="RabbitMQ for the jobs-through-the-broker figure (skipped when none answers)",
    )
    parser.add_argument("--dispatch-jobs", type=int, default=2000, help="jobs in the broker burst")
    parser.add_argument("--fleet-agents", help=argparse.SUPPRESS)
    parser.add_argument("--fleet-scheduler", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--bare-workers", type=int, default=512, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare.threaded(args.bare, args.bare_workers)
        return
    if args.bare_aio:
        bare.on_loop(args.bare_aio)
        return
    if args.fleet_agents:
        fleet.agents_main(args.fleet_agents, args.ids, args.boot, args.interval, args.start, args.stop)
        return
    if args.fleet_scheduler:
        fleet.scheduler_main(args.fleet_scheduler, args.rate, args.start, args.stop)
        return
    if args.load:
        load_main(args.load, args.ids.split(","), args.boot, args.seconds)
        return
    if args.match_load:
        print(json.dumps(asyncio.run(_match_load(args.match_load, args.workers, args.seconds))))
        return
    if args.health_load:
        print(json.dumps(asyncio.run(unary.health_load(args.health_load, args.workers, args.seconds))))
        return
    if args.burst:
        print(json.dumps(asyncio.run(unary.bursts(args.burst, args.size, args.burst_rounds))))
        return

    node_ids = [f"bench-{i:06d}" for i in range(min(args.streams, args.nodes))]
    fleets = [int(n) for n in args.fleet.split(",") if n]
    process_counts = [int(n) for n in args.fleet_processes.split(",") if n]
    # Per fleet size: the bare run, then per process count a run of beats alone (CPU per beat)
    # and one with a scheduler matching meanwhile (Match latency while streaming).
    fleet_results: list[
        tuple[dict[str, Any], dict[str, Any], list[tuple[int, dict[str, Any], dict[str, Any]]]]
    ] = []
    # Per process count and offered rate: Match latency while a fleet streams.
    open_loop: list[tuple[int, float, dict[str, Any]]] = []
    silent: dict[str, Any] | None = None
    with EmbeddedRedis() as embedded:
        bare_port, floor_port, ls_port = free_port(), free_port(), free_port()
        multi_ports = {n: free_port() for n in process_counts if n > 1}
        bare_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "--bare",
                str(bare_port),
                "--bare-workers",
                str(max([512, *fleets]) + 64),
            ],
            cwd=HERE.parent,
            stderr=subprocess.DEVNULL,
        )
        floor = subprocess.Popen(
            [sys.executable, "-m", "bench", "--bare-aio", str(floor_port)],
            cwd=HERE.parent,
            stderr=subprocess.DEVNULL,
        )
        env = {
            **os.environ,
            "LIVESTATE_REDIS_URL": embedded.url,
            "LIVESTATE_LOG_LEVEL": "WARNING",
            # Populating takes a while; no node may go silent before it beats in the measurement.
            "LIVESTATE_SUSPECT_AFTER": "1800",
            "LIVESTATE_OFFLINE_AFTER": "3600",
        }
        command = [str(Path(sys.executable).parent / "livestate"), "serve", "--listen"]
        server = subprocess.Popen([*command, f"127.0.0.1:{ls_port}"], env=env)
        # The same server with --metrics-listen: what the RPC interceptor and counters cost.
        metered_port = free_port()
        metered = subprocess.Popen(
            [*command, f"127.0.0.1:{metered_port}", "--metrics-listen", f"127.0.0.1:{free_port()}"], env=env
        )
        # Idle until its fleets: the same Redis, so the same registered nodes.
        multi = {
            n: subprocess.Popen([*command, f"127.0.0.1:{port}", "--processes", str(n)], env=env)
            for n, port in multi_ports.items()
        }
        try:
            memory.wait_ready(bare_port)
            memory.wait_ready(floor_port)
            memory.wait_ready(ls_port)
            memory.wait_ready(metered_port)
            for port in multi_ports.values():
                memory.wait_ready(port)
            client = redis.Redis.from_url(embedded.url)
            started = time.monotonic()
            memory.populate(ls_port, args.nodes, args.boot)
            populate_s = time.monotonic() - started

            baseline = _measure(bare_port, node_ids, args.boot, args.seconds)
            livestate = _measure(ls_port, node_ids, args.boot, args.seconds)
            match_baseline = _measure_match(bare_port, args.workers, args.seconds)
            common = ["--workers", str(args.workers), "--seconds", str(args.seconds)]
            # The same server with and without --metrics-listen, measured in turns (a single run
            # of each was skewed by which ran first); each figure is the median run of three.
            pair_runs: dict[int, list[tuple[dict[str, Any], dict[str, float]]]] = {
                ls_port: [],
                metered_port: [],
            }
            for _ in range(PAIR_ROUNDS):
                for port, proc in ((ls_port, server), (metered_port, metered)):
                    pair_runs[port].append(
                        _costed(
                            proc.pid,
                            client,
                            lambda port=port: _measure_match(port, args.workers, args.seconds),  # type: ignore[misc]
                            "matches_per_s",
                            args.seconds,
                        )
                    )
            match_livestate, pair_cost = _median_run(pair_runs[ls_port])
            match_metered, metered_cost = _median_run(pair_runs[metered_port])
            health, check_cost = _costed(
                server.pid,
                client,
                lambda: _client("--health-load", f"127.0.0.1:{ls_port}", *common),
                "calls_per_s",
                args.seconds,
            )
            pair_profile = profile.during(
                server.pid, ["--match-load", f"127.0.0.1:{ls_port}", *common], args.seconds
            )
            # Jobs through RabbitMQ end to end: a burst for throughput, then spread at half of it.
            jobs_burst = dispatch.run(ls_port, args.amqp_url, jobs=args.dispatch_jobs)
            jobs_paced = (
                dispatch.run(
                    ls_port, args.amqp_url, jobs=args.dispatch_jobs // 3, rate=jobs_burst["jobs_per_s"] / 2
                )
                if "skipped" not in jobs_burst
                else jobs_burst
            )
            burst_runs = [
                _client(
                    "--burst",
                    f"127.0.0.1:{ls_port}",
                    "--size",
                    size,
                    "--burst-rounds",
                    str(args.burst_rounds),
                )
                for size in args.bursts.split(",")
                if size
            ]
            targets = {1: (ls_port, server)} | {n: (multi_ports[n], multi[n]) for n in multi}
            for streams in fleets:
                if streams > args.nodes:
                    continue
                paced = {"interval": args.interval, "seconds": max(args.seconds, 3 * args.interval)}
                bare_run = fleet.run(bare_port, bare_proc.pid, streams, args.boot, match_rate=0, **paced)
                # Long enough for a p99 of a few hundred Matches, not the worst of a handful.
                matching = {
                    "interval": args.interval,
                    "seconds": max(paced["seconds"], MATCH_SAMPLES / args.match_rate),
                }
                floor_run = fleet.run(
                    floor_port, floor.pid, streams, args.boot, match_rate=args.match_rate, **matching
                )
                runs = []
                for n in process_counts:
                    port, proc = targets[n]
                    beats = fleet.run(port, proc.pid, streams, args.boot, match_rate=0, **paced)
                    matched = fleet.run(
                        port, proc.pid, streams, args.boot, match_rate=args.match_rate, **matching
                    )
                    runs.append((n, beats, matched))
                fleet_results.append((bare_run, floor_run, runs))
            match_rates = [float(r) for r in args.match_rates.split(",") if r]
            for n in process_counts if args.match_fleet <= args.nodes else []:
                port, proc = targets[n]
                for rate in match_rates:
                    seconds = max(args.seconds, MATCH_SAMPLES / rate)
                    run = fleet.run(
                        port,
                        proc.pid,
                        args.match_fleet,
                        args.boot,
                        interval=args.interval,
                        seconds=seconds,
                        match_rate=rate,
                    )
                    open_loop.append((n, rate, run))
            silent = (
                liveness.run(command, embedded.url, free_port(), args.liveness_nodes)
                if args.liveness_nodes
                else None
            )
            server_info = client.info("server")
            client.close()
        finally:
            for proc in (bare_proc, floor, server, metered, *multi.values()):
                proc.terminate()
                proc.wait(timeout=15)

    counts = [int(n) for n in args.memory_nodes.split(",") if n]
    sizes = memory.run(command, counts, args.boot)
    print(f"registered {args.nodes} nodes in {populate_s:.1f}s ({args.nodes / populate_s:.0f} Register/s)")
    for size in sizes:
        slope = f", {size['slope_per_node']:.0f} B per node added" if "slope_per_node" in size else ""
        print(
            f"redis memory per node with {size['nodes']} registered: {size['grown_per_node']:.0f} B{slope} "
            "(used_memory grown over the empty instance; target <= 1 KB)"
        )
    ratio = livestate["beats_per_s"] / baseline["beats_per_s"]
    print(f"{args.streams} streams, {args.seconds:.0f}s each:")
    print(
        f"  bare gRPC stream     {baseline['beats_per_s']:8.0f} msg/s   p50 {baseline['p50_ms']:.2f} ms"
        f"  p99 {baseline['p99_ms']:.2f} ms"
    )
    print(
        f"  livestate Heartbeat  {livestate['beats_per_s']:8.0f} beats/s p50 {livestate['p50_ms']:.2f} ms"
        f"  p99 {livestate['p99_ms']:.2f} ms  resyncs {livestate['resyncs']:.0f}"
    )
    print(f"  ratio                {ratio:8.2f}   (target >= 0.60)")
    match_ratio = match_livestate["matches_per_s"] / match_baseline["matches_per_s"]
    print(f"Match + Release, {args.workers} callers, {args.seconds:.0f}s each, {args.nodes} nodes:")
    print(
        f"  bare gRPC unary      {match_baseline['matches_per_s']:8.0f} calls/s  "
        f"p50 {match_baseline['p50_ms']:.2f} ms  p99 {match_baseline['p99_ms']:.2f} ms"
    )
    print(
        f"  livestate Match      {match_livestate['matches_per_s']:8.0f} matches/s "
        f"p50 {match_livestate['p50_ms']:.2f} ms  p99 {match_livestate['p99_ms']:.2f} ms  "
        f"not found {match_livestate['misses']:.0f}"
    )
    print(
        f"  ratio                {match_ratio:8.2f}   (Match alone vs a bare call; each livestate match also"
        " pays a Release)"
    )
    pair_ratio = match_livestate["matches_per_s"] / health["calls_per_s"]
    print(
        f"  health Check         {health['calls_per_s']:8.0f} calls/s  p50 {health['p50_ms']:.2f} ms  "
        f"p99 {health['p99_ms']:.2f} ms  (the same livestate server)"
    )
    print(f"  Match + Release pairs / health Checks {pair_ratio:5.2f}   (target >= 0.30; 0.5 is parity)")
    print(
        f"  CPU per pair: server {pair_cost['server_us']:.0f} us, Redis {pair_cost['redis_us']:.0f} us; "
        f"per Check: server {check_cost['server_us']:.0f} us"
    )
    metered_share = match_metered["matches_per_s"] / match_livestate["matches_per_s"]
    print(
        f"  with --metrics-listen {match_metered['matches_per_s']:8.0f} matches/s "
        f"({metered_share:.2f} of the same server without; median of {PAIR_ROUNDS} runs each, in turns), "
        f"server CPU per pair {metered_cost['server_us']:.0f} us "
        f"({metered_cost['server_us'] / pair_cost['server_us']:.2f}x)"
    )
    if pair_profile:
        shares = ", ".join(f"{part} {share:.0%}" for part, share in pair_profile["busy_shares"].items())
        print(f"  where a pair's server CPU goes (py-spy): {shares}")
    for burst in burst_runs:
        print(
            f"Burst of {burst['size']} simultaneous Matches ({burst['rounds']} bursts, no fleet): "
            f"Match p50 {burst['p50_ms']:.1f} ms  p99 {burst['p99_ms']:.1f} ms  "
            f"max {burst['max_ms']:.0f} ms  "
            f"whole burst p50 {burst['burst_p50_ms']:.1f} ms  errors {burst['errors'] or 'none'}"
        )
    if "skipped" in jobs_burst:
        print(f"Jobs through RabbitMQ: skipped ({jobs_burst['skipped']})")
    else:
        print(
            f"Jobs through RabbitMQ -> livestate dispatch -> livestate -> node queues ({jobs_burst['nodes']} "
            f"nodes): a burst of {jobs_burst['jobs']} at {jobs_burst['jobs_per_s']:.0f} jobs/s; spread at "
            f"{jobs_paced['rate']:.0f}/s, publish to node p50 {jobs_paced['p50_ms']:.1f} ms  "
            f"p99 {jobs_paced['p99_ms']:.1f} ms; dead-lettered {jobs_burst['dead'] + jobs_paced['dead']}"
        )
    lua_prelude = prelude.run()
    pair_share = 100 * lua_prelude["pair_helpers_us"] / pair_cost["redis_us"]
    pair_calls = len(lua_prelude["pair_scripts"])
    every_share = 100 * pair_calls * lua_prelude["every_helper_us"] / pair_cost["redis_us"]
    print(
        f"Lua helpers: a Match + Release pair's {pair_calls} script calls spend "
        f"{lua_prelude['pair_helpers_us']:.1f} us of Redis CPU defining the helpers they use "
        f"({pair_share:.1f}% of the pair's); every helper in every script would be "
        f"{lua_prelude['every_helper_us']:.1f} us per call ({every_share:.1f}%)"
    )
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": report.machine(server_info),
        "settings": {
            "nodes": args.nodes,
            "streams": args.streams,
            "seconds": args.seconds,
            "workers": args.workers,
            "interval": args.interval,
            "match_rate": args.match_rate,
            "match_fleet": args.match_fleet,
            "fleets": args.fleet,
            "fleet_processes": args.fleet_processes,
            "match_rates": args.match_rates,
            "register_per_s": round(args.nodes / populate_s),
            "server": "livestate serve defaults (gc_interval 0.1, max_streams 10000, ...)",
        },
        "closed_loop": {
            "bare_stream": baseline,
            "heartbeat": livestate,
            "heartbeat_ratio": ratio,
            "bare_unary": match_baseline,
            "match": match_livestate,
            "match_ratio": match_ratio,
            "health": health,
            "pair_ratio": pair_ratio,
            "pair_cost": pair_cost,
            "check_cost": check_cost,
            "match_metered": match_metered,
            "metered_cost": metered_cost,
            "pair_profile": pair_profile,
        },
        "fleets": [
            {
                "streams": bare_run["streams"],
                "bare": bare_run,
                "floor": floor_run,
                "rows": [
                    ("bare threaded stream", bare_run, {}),
                    ("bare grpc.aio (floor)", floor_run, floor_run),
                    *(
                        (f"livestate, {n} process{'es' if n > 1 else ''}", beats, matched)
                        for n, beats, matched in runs
                    ),
                ],
            }
            for bare_run, floor_run, runs in fleet_results
        ],
        "open_loop": [{"processes": n, "rate": rate, **run} for n, rate, run in open_loop],
        "bursts": burst_runs,
        "dispatch": {"burst": jobs_burst, "paced": jobs_paced},
        "prelude": {**lua_prelude, "pair_redis_us": pair_cost["redis_us"]},
        "memory": sizes,
        "liveness": silent,
    }
    if args.report:
        written = report.write(results, Path(args.report))
        print("report:", *(str(path) for path in written))
    if silent:
        print(
            f"Liveness: {silent['nodes']} nodes stop beating (suspect_after {silent['suspect_after_s']:g} s, "
            f"offline_after {silent['offline_after_s']:g} s, sweeps every 0.5 s); lag past the deadline:"
        )
        for stage in ("suspect", "offline"):
            print(
                f"  {stage.upper():8s} seen for {silent[stage + '_seen']}: p50 "
                f"{silent[stage + '_lag_p50_ms']:.0f} ms  p99 {silent[stage + '_lag_p99_ms']:.0f} ms  "
                f"max {silent[stage + '_lag_max_ms']:.0f} ms"
            )
    for bare_run, floor_run, runs in fleet_results:
        print(
            f"Paced fleet: {bare_run['streams']} agent streams beating every {args.interval:g}s "
            "(arrivals spread), default settings; load generators share the machine's cores:"
        )
        _fleet_line("bare threaded stream", bare_run)
        _fleet_line("bare grpc.aio stream", floor_run)
        print(f"    with a scheduler at {args.match_rate:g} Match/s: {_matching(floor_run)}")
        for n, beats, matched in runs:
            name = f"livestate, {n} process{'es' if n > 1 else ''}"
            _fleet_line(name, beats)
            print(
                f"    CPU per beat ratio {beats['cpu_us_per_beat'] / bare_run['cpu_us_per_beat']:5.2f} "
                f"(target <= 1.5)  memory per stream {beats['rss_kb_per_stream']:.1f} KB"
            )
            print(f"    with a scheduler at {args.match_rate:g} Match/s: {_matching(matched)}")
            print(
                f"    latency over the bare grpc.aio floor: ack p99 "
                f"{matched['ack_p99_ms'] / floor_run['ack_p99_ms']:.2f}x  Match p50 "
                f"{matched['match_p50_ms'] / floor_run['match_p50_ms']:.2f}x  p99 "
                f"{matched['match_p99_ms'] / floor_run['match_p99_ms']:.2f}x"
            )
        print()
    if open_loop:
        _open_loop(args.match_fleet, open_loop)


def _open_loop(streams: int, runs: list[tuple[int, float, dict[str, Any]]]) -> None:
    print(
        f"Match open loop (spread arrivals, each Match then its Release) while {streams} agents "
        "stream; the generators share the machine's cores:"
    )
    for processes in sorted({n for n, _, _ in runs}):
        mine = [(rate, r) for n, rate, r in runs if n == processes]
        for rate, r in mine:
            errors = r["match_errors"] or "none"
            print(
                f"  {processes} process{'es' if processes > 1 else ''}, {rate:5.0f}/s offered: "
                f"{r['matches'] / max(1, r['offered']):6.1%} answered  p50 {r['match_p50_ms']:.1f} ms  "
                f"p99 {r['match_p99_ms']:.1f} ms (target <= 10 at 500/s)  p999 "
                f"{r['match_p999_ms']:.1f} ms  max {r['match_max_ms']:.0f} ms  errors {errors}  "
                f"ack p99 {r['ack_p99_ms']:.1f} ms  server {r['cpu_cores']:.2f} cores"
            )
        under = [rate for rate, r in mine if r["match_p99_ms"] <= 10 and not r["match_errors"]]
        print(f"    highest offered rate tried with p99 <= 10 ms: {max(under, default=0):.0f}/s")


def _matching(r: dict[str, Any]) -> str:
    return (
        f"{r['matches']} Matches, ack p99 {r['ack_p99_ms']:.1f} ms (target <= 50)  Match p50 "
        f"{r['match_p50_ms']:.1f} ms  p99 {r['match_p99_ms']:.1f} ms (target <= 20)  max "
        f"{r['match_max_ms']:.0f} ms  "
        f"errors {r['match_errors'] or 'none'}, streams ended by {r['errors'] or 'nothing'}, "
        f"host steal {r['steal']:.0%}"
    )


def _fleet_line(name: str, r: dict[str, Any]) -> None:
    print(
        f"  {name:22s} {r['beats_per_s']:6.0f} beats/s  ack p50 {r['ack_p50_ms']:.1f} ms  "
        f"p99 {r['ack_p99_ms']:.1f} ms  max {r['ack_max_ms']:.0f} ms  "
        f"server CPU {r['cpu_us_per_beat']:.0f} us/beat "
        f"({r['cpu_cores']:.2f} cores)  streams ended by {r['errors'] or 'nothing'}"
    )


if __name__ == "__main__":
    main()
