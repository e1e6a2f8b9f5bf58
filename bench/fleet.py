"""Paced agent fleets: N Heartbeat streams each beating once per interval, arrivals spread over
the interval, as a real fleet does (the ping-pong bench measures a ceiling instead).

Load generators are separate processes of about 500 streams each (grpc.aio), so the server
under test gets the cores it can. The same fleet is run against a bare threaded gRPC stream
server (no Redis, fixed answers, a thread per stream) as the same-run reference: server CPU per
beat is reported for both and as a ratio, from a run of beats alone. A second run adds a
scheduler matching at a paced rate, and reports its Match latency.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from bench import procs
from bench.stats import pct_ms
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import match_service_pb2_grpc as mpb_grpc
from livestate.v1 import node_pb2

HERE = Path(__file__).resolve().parent
PER_GENERATOR = 500
RAMP_PER_S = 500  # streams opened per second before measuring


# Every process reads the same CLOCK_MONOTONIC, so the measured window [start, stop) is given to
# the generators as absolute monotonic times and the server's CPU is sampled at its ends.


async def _agents(
    target: str, node_ids: list[str], boot: str, interval: float, start: float, stop: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    beats = 0
    detail: dict[str, str] = {}
    measure_from, stop_at = start, stop

    # Streams open spread over the time left before measuring (at least an interval), as a
    # fleet's agents come up over time; their beats are then spread over the interval too.
    ramp = max(interval, start - time.monotonic() - interval)

    async with grpc.aio.insecure_channel(target) as channel:
        stub = hb_grpc.HeartbeatServiceStub(channel)

        async def one(node_id: str) -> None:
            nonlocal beats
            await asyncio.sleep(random.uniform(0, ramp))
            call = stub.Heartbeat()
            # An agent's seq only grows within its boot: runs after the first continue above it
            # (a seq the server has seen is acknowledged, not applied: a cheaper beat).
            seq = int(time.time() * 1000)
            try:
                while (now := time.monotonic()) < stop_at:
                    seq += 1
                    sent = time.perf_counter()
                    await call.write(
                        hb.HeartbeatRequest(
                            node_id=node_id, boot_id=boot, seq=seq, state=node_pb2.NODE_STATE_IDLE
                        )
                    )
                    await call.read()
                    if now >= measure_from:
                        latencies.append(time.perf_counter() - sent)
                        beats += 1
                    await asyncio.sleep(max(0.0, now + interval - time.monotonic()))
                await call.done_writing()
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] += 1
                detail.setdefault(err.code().name, str(err.details())[:120])

        await asyncio.gather(*(one(n) for n in node_ids))
    return {"latencies": latencies, "errors": dict(errors), "beats": beats, "detail": detail}


async def _scheduler(target: str, rate: float, start: float, stop: float) -> dict[str, Any]:
    """Open loop: Match n is sent at start + n / rate whether or not earlier ones have been
    answered (a closed loop would slow its offer down to what the server answers), then its
    lease is released."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mpb_grpc.MatchServiceStub(channel)

        async def one(n: int) -> None:
            sent = time.perf_counter()
            try:
                reply = await stub.Match(
                    mpb.MatchRequest(job_id=f"fleet-{n}", env="bench", model="llama-3-8b"), timeout=5
                )
                latencies.append(time.perf_counter() - sent)
                await stub.Release(
                    mpb.ReleaseRequest(
                        lease_id=reply.lease.lease_id, fencing_token=reply.lease.fencing_token
                    ),
                    timeout=5,
                )
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] += 1

        calls = []
        n = 0
        while (due := start + n / rate) < stop:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            calls.append(asyncio.create_task(one(n)))
            n += 1
        await asyncio.gather(*calls)
    return {"latencies": latencies, "errors": dict(errors), "offered": n}


def agents_main(target: str, ids: str, boot: str, interval: float, start: float, stop: float) -> None:
    print(json.dumps(asyncio.run(_agents(target, ids.split(","), boot, interval, start, stop))))


def scheduler_main(target: str, rate: float, start: float, stop: float) -> None:
    print(json.dumps(asyncio.run(_scheduler(target, rate, start, stop))))


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args], cwd=HERE.parent, stdout=subprocess.PIPE, text=True
    )


def _cpu_counters() -> list[int]:
    """The machine's CPU time counters (/proc/stat): user nice system idle iowait irq softirq steal."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def _steal_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time a VM host took for others (steal) between two reads."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return spent[7] / max(1, sum(spent))


def run(
    port: int, server_pid: int, streams: int, boot: str, *, interval: float, seconds: float, match_rate: float
) -> dict[str, Any]:
    """One paced fleet of `streams` agents against the server on `port` (pid `server_pid`)."""
    # Every stream connected and beating (and the generators started) before measuring.
    # Generators start (about 2 s), streams open (RAMP_PER_S a second), one more interval.
    start = time.monotonic() + 2 + 2 * interval + streams / RAMP_PER_S
    stop = start + seconds
    window = ["--start", repr(start), "--stop", repr(stop)]
    ids = [f"bench-{i:06d}" for i in range(streams)]
    generators = [
        _spawn(
            [
                "--fleet-agents",
                f"127.0.0.1:{port}",
                "--ids",
                ",".join(ids[i : i + PER_GENERATOR]),
                "--boot",
                boot,
                "--interval",
                str(interval),
                *window,
            ]
        )
        for i in range(0, streams, PER_GENERATOR)
    ]
    scheduler = (
        _spawn(["--fleet-scheduler", f"127.0.0.1:{port}", "--rate", str(match_rate), *window])
        if match_rate
        else None
    )
    rss_before = procs.rss_bytes(server_pid)
    time.sleep(max(0.0, start - time.monotonic()))
    cpu_before, machine_before = procs.cpu_seconds(server_pid), _cpu_counters()
    rss_during = procs.rss_bytes(server_pid)
    time.sleep(max(0.0, stop - time.monotonic()))
    cpu, elapsed = procs.cpu_seconds(server_pid) - cpu_before, seconds
    steal = _steal_share(machine_before, _cpu_counters())
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    details: dict[str, str] = {}
    beats = 0
    for proc in generators:
        out, _ = proc.communicate(timeout=60 + seconds)
        got = json.loads(out)
        latencies += got["latencies"]
        errors.update(got["errors"])
        details.update(got["detail"])
        beats += got["beats"]
    result: dict[str, Any] = {
        "streams": streams,
        "beats_per_s": beats / elapsed,
        "ack_p50_ms": pct_ms(latencies, 0.5),
        "ack_p99_ms": pct_ms(latencies, 0.99),
        # The worst ack shows the longest pause of the window (a full garbage collection, say).
        "ack_max_ms": pct_ms(latencies, 1.0),
        "cpu_us_per_beat": cpu / max(1, beats) * 1e6,
        "cpu_cores": cpu / elapsed,
        # What the open streams hold: the server's growth from before the fleet connected.
        "rss_kb_per_stream": (rss_during - rss_before) / 1024 / streams,
        "steal": steal,
        "errors": {code: f"{n} ({details.get(code, '')})" for code, n in errors.items()},
    }
    if scheduler is not None:
        out, _ = scheduler.communicate(timeout=60 + seconds)
        got = json.loads(out)
        result["matches"] = len(got["latencies"])
        result["offered"] = got["offered"]
        result["match_p999_ms"] = pct_ms(got["latencies"], 0.999)
        result["match_p50_ms"] = pct_ms(got["latencies"], 0.5)
        result["match_p99_ms"] = pct_ms(got["latencies"], 0.99)
        result["match_max_ms"] = pct_ms(got["latencies"], 1.0)
        result["match_errors"] = got["errors"]
    return result
