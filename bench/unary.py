"""Unary loads beside the Match closed loop: the same server's health Check as the ceiling a
Match + Release pair is measured against (a unary RPC that touches no Redis), and bursts of
simultaneous Matches, reported apart from spread arrivals."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.stats import pct_ms
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import match_service_pb2_grpc as mpb_grpc

# Time between bursts: long enough for the previous burst's Releases to land.
BURST_GAP = 0.25


async def health_load(target: str, workers: int, seconds: float) -> dict[str, Any]:
    """Closed loop of health Checks, `workers` callers at once."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stop_at = time.monotonic() + seconds
        latencies: list[float] = []

        async def one() -> None:
            while time.monotonic() < stop_at:
                sent = time.perf_counter()
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                latencies.append(time.perf_counter() - sent)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(workers)))
        elapsed = time.monotonic() - started
    return {
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": pct_ms(latencies, 0.5),
        "p99_ms": pct_ms(latencies, 0.99),
    }


async def bursts(target: str, size: int, rounds: int) -> dict[str, Any]:
    """`rounds` times: `size` Matches sent at once, then their Releases; the latency of each
    Match and of the whole burst (its last answer)."""
    latencies: list[float] = []
    whole: list[float] = []
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mpb_grpc.MatchServiceStub(channel)

        async def one(job_id: str) -> mpb.MatchResponse | None:
            sent = time.perf_counter()
            try:
                reply: mpb.MatchResponse = await stub.Match(
                    mpb.MatchRequest(job_id=job_id, env="bench", model="llama-3-8b"), timeout=5
                )
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] += 1
                return None
            latencies.append(time.perf_counter() - sent)
            return reply

        for r in range(rounds):
            started = time.perf_counter()
            replies = await asyncio.gather(*(one(f"burst-{size}-{r}-{i}") for i in range(size)))
            whole.append(time.perf_counter() - started)
            await asyncio.gather(
                *(
                    stub.Release(
                        mpb.ReleaseRequest(
                            lease_id=reply.lease.lease_id, fencing_token=reply.lease.fencing_token
                        ),
                        timeout=5,
                    )
                    for reply in replies
                    if reply is not None
                )
            )
            await asyncio.sleep(BURST_GAP)
    return {
        "size": size,
        "rounds": rounds,
        "p50_ms": pct_ms(latencies, 0.5),
        "p99_ms": pct_ms(latencies, 0.99),
        "max_ms": pct_ms(latencies, 1.0),
        "burst_p50_ms": pct_ms(whole, 0.5),
        "errors": dict(errors),
    }
