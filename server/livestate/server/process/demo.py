"""`livestate demo`: the whole system on one machine, alive, in one command.

It starts an embedded Valkey and a livestate server (metrics and the status page on), then a
simulated fleet and a few schedulers, all through the public API and the client helpers:
- nodes across regions and models beat like agents do; now and then one dies (stops beating:
  SUSPECT, then OFFLINE, its lease lost) and later comes back (registers again);
- schedulers match jobs (waiting briefly for a node), hold the lease while the "job" runs,
  release it, or fail it now and then (the node's failure score rises; enough failures and the
  server cools it down);
- an operator pauses a node for a while, and shadow-bans one.
A dashboard (demo_view.py) shows nodes by region and liveness, matches/s and p99, queue depths,
flags in force and the latest events, until Ctrl-C or `--seconds`; then everything stops,
the Valkey too, and nothing is left running.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import logging
import random
import signal
import threading
import time
from collections.abc import Iterator, Sequence

import grpc

from livestate.client import Admin, Scheduler
from livestate.client.agent import NodeAgent, Reading
from livestate.server.core.config import Config
from livestate.server.process.app import LivestateServer
from livestate.v1 import flag_pb2, node_pb2

log = logging.getLogger(__name__)

REGIONS = ("eu-west", "us-east", "ap-south")
MODELS = ("llama-3-8b", "mixtral-8x7b", "qwen-72b")
ENV = "demo"


@dataclasses.dataclass
class Stats:
    """What the schedulers saw, for the dashboard: matches, their latencies, outcomes."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    latencies: collections.deque[tuple[float, float]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=5000)
    )  # (when, seconds)
    matched: int = 0
    no_node: int = 0
    released: int = 0
    failed: int = 0
    errors: int = 0
    lost: int = 0  # leases gone while their job ran (the node died)
    deaths: int = 0
    returns: int = 0

    def matched_in(self, when: float, seconds: float) -> None:
        with self.lock:
            self.matched += 1
            self.latencies.append((when, seconds))

    def recent(self, window: float = 10.0) -> tuple[float, float]:
        """Matches per second and their p99 (ms) over the last `window` seconds."""
        now = time.monotonic()
        with self.lock:
            took = sorted(s for t, s in self.latencies if now - t <= window)
        if not took:
            return 0.0, 0.0
        return len(took) / window, took[min(len(took) - 1, int(0.99 * len(took)))] * 1000

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class Fleet:
    """Simulated nodes: one thread beats them all (unary Beat, as an agent may); churn kills a
    node now and then (it goes silent) and brings dead ones back (they register again)."""

    def __init__(self, target: str, count: int, stats: Stats, rng: random.Random) -> None:
        self.stats = stats
        self.rng = rng
        self.agents = [
            NodeAgent(
                target,
                node_pb2.NodeSpec(
                    node_id=f"gpu-{REGIONS[i % len(REGIONS)]}-{i:03d}",
                    env=ENV,
                    region=REGIONS[i % len(REGIONS)],
                    models=[MODELS[(i // len(REGIONS)) % len(MODELS)]],
                    gpu_model=rng.choice(("NVIDIA L4", "NVIDIA A100", "NVIDIA H100")),
                    gpu_count=1,
                    vram_total_mb=rng.choice((24_000, 40_000, 80_000)),
                ),
            )
            for i in range(count)
        ]
        self.dead: dict[str, float] = {}  # node_id -> when it comes back

    def run(self, stop: threading.Event) -> None:
        for agent in self.agents:
            with contextlib.suppress(grpc.RpcError):
                agent.register(Reading())
        next_churn = time.monotonic() + 4
        while not stop.wait(1.0):
            now = time.monotonic()
            for agent in self.agents:
                node_id = agent.spec.node_id
                if node_id in self.dead:
                    if now < self.dead[node_id]:
                        continue
                    del self.dead[node_id]
                    self.stats.count("returns")
                with contextlib.suppress(grpc.RpcError):
                    agent.beat(Reading(state=node_pb2.NODE_STATE_IDLE, vram_free_mb=agent.spec.vram_total_mb))
            if now >= next_churn:
                victim = self.rng.choice(self.agents).spec.node_id
                if victim not in self.dead:
                    self.dead[victim] = now + self.rng.uniform(8, 15)
                    self.stats.count("deaths")
                next_churn = now + self.rng.uniform(3, 6)

    def close(self) -> None:
        for agent in self.agents:
            agent.close()


def schedule(target: str, name: str, stats: Stats, stop: threading.Event, seed: int) -> None:
    """One scheduler: match a job (waiting up to 1 s), run it for a moment, release it or fail it."""
    rng = random.Random(seed)
    with Scheduler(target, name) as scheduler:
        n = 0
        while not stop.is_set():
            n += 1
            job = f"{name}-job-{n}"
            started = time.monotonic()
            try:
                found = scheduler.match(job, env=ENV, model=rng.choice(MODELS), wait=1.0)
            except grpc.RpcError as err:
                log.warning("%s: Match failed: %s %s", name, err.code().name, err.details())
                stats.count("errors")
                stop.wait(0.5)
                continue
            if found is None:
                stats.count("no_node")
                continue
            stats.matched_in(time.monotonic(), time.monotonic() - started)
            try:
                with scheduler.holding(found.lease, every=1.0) as held:
                    stop.wait(rng.uniform(0.3, 2.5))
                    if rng.random() < 0.08:
                        raise RuntimeError("simulated CUDA out of memory")
                stats.count("lost" if held.lost.is_set() else "released")
            except RuntimeError:
                stats.count("failed")
            except grpc.RpcError as err:
                log.warning("%s: ending lease failed: %s %s", name, err.code().name, err.details())
                stats.count("errors")


def operate(target: str, fleet: Fleet, stop: threading.Event, rng: random.Random) -> None:
    """An operator: pauses a node for a while every so often, and shadow-bans one for good."""
    with Admin(target) as admin:
        if stop.wait(6):
            return
        banned = rng.choice(fleet.agents).spec.node_id
        with contextlib.suppress(grpc.RpcError):
            admin.set_flag(banned, flag_pb2.FLAG_KIND_SHADOW_BAN, reason="returned garbage outputs")
        while not stop.wait(rng.uniform(8, 12)):
            node_id = rng.choice(fleet.agents).spec.node_id
            with contextlib.suppress(grpc.RpcError):
                admin.set_flag(
                    node_id, flag_pb2.FLAG_KIND_PAUSE, ttl=15, reason="thermal", message="cooling down"
                )


@contextlib.contextmanager
def running(nodes: int, schedulers: int, seed: int) -> Iterator[tuple[LivestateServer, Fleet, Stats, str]]:
    """The server, the fleet, the schedulers and the operator, all started; all stopped after."""
    config = Config(
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        heartbeat_interval=1.0,
        suspect_after=3.0,
        offline_after=6.0,
        log_level="WARNING",
    )
    server = LivestateServer(config)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    fleet: Fleet | None = None
    try:
        server.start()
        assert server.fleet_metrics is not None
        server.fleet_metrics.every = 1.0
        target = f"127.0.0.1:{server.port}"
        rng = random.Random(seed)
        stats = Stats()
        fleet = Fleet(target, nodes, stats, rng)
        threads.append(threading.Thread(target=fleet.run, args=(stop,), name="demo-fleet"))
        for i in range(schedulers):
            args = (target, f"sched-{i}", stats, stop, seed + i)
            threads.append(threading.Thread(target=schedule, args=args, name=f"demo-sched-{i}"))
        threads.append(
            threading.Thread(
                target=operate, args=(target, fleet, stop, random.Random(seed)), name="demo-operator"
            )
        )
        for thread in threads:
            thread.start()
        assert server.metrics_http is not None
        yield server, fleet, stats, f"http://127.0.0.1:{server.metrics_http.port}/"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        if fleet is not None:
            fleet.close()
        server.stop(grace=1.0)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="livestate demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=60, help="simulated nodes (default 60)")
    parser.add_argument("--schedulers", type=int, default=6, help="simulated schedulers (default 6)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (default: Ctrl-C)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the simulation")
    parser.add_argument("--plain", action="store_true", help="a line a second instead of the dashboard")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.schedulers < 0:
        parser.error("--nodes must be >= 1 and --schedulers >= 0")
    logging.basicConfig(level=logging.WARNING)
    from livestate.server.process import demo_view

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    until = time.monotonic() + args.seconds if args.seconds > 0 else float("inf")
    with running(args.nodes, args.schedulers, args.seed) as (server, _fleet, stats, page):
        demo_view.show(server, stats, page, done, until, plain=args.plain)
    print("demo stopped: server, fleet and embedded valkey are down")
    return 0
