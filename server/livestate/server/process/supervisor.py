"""`livestate serve --processes N`: N server processes behind one port, so every core serves.

Python serves one core per process (the GIL), so one port is shared by N processes with
SO_REUSEPORT (gRPC sets it on Linux) and the kernel spreads connections over them. The
supervisor starts no gRPC itself (gRPC does not survive fork): each child is a fresh
`livestate serve` process given the whole configuration in LIVESTATE_* variables, with the
Redis URL fixed (an embedded Valkey, when no URL was given, is started once here and shared) and
a concrete port (port 0 is resolved here, so every child binds the same one). A child that dies
is started again; SIGTERM or SIGINT drains every child (each gets its shutdown grace) and stops.

Background loops do not multiply their Redis cost by N: only the process holding the sweeper
lease sweeps (maintenance.py); the others only keep their epoch current.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

from prometheus_client import multiprocess

from livestate.server.core.config import ENV_PREFIX, Config
from livestate.server.core.signals import stop_requested
from livestate.server.process.fleet_metrics import FleetMetrics
from livestate.server.process.metrics_http import MetricsServer
from livestate.server.store import connection
from livestate.server.store.embedded import EmbeddedRedis, free_port
from livestate.server.store.runtime import Runtime

log = logging.getLogger(__name__)

# A child that dies sooner than this after it started is restarted only after this long, so a
# child that cannot start does not spin.
RESTART_BACKOFF = 1.0


def child_environment(config: Config) -> dict[str, str]:
    """The environment of a child: this one, with every setting as its LIVESTATE_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[ENV_PREFIX + field.name.upper()] = str(value)
    return env


class _Child:
    def __init__(self, slot: int, env: dict[str, str]) -> None:
        self.slot = slot
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livestate.server.process.cli", "serve"], env=self.env
        )
        self.started = time.monotonic()
        log.info("server process %d started (pid %d)", self.slot, self.proc.pid)


def run(config: Config) -> int:
    embedded: EmbeddedRedis | None = None
    redis_url = config.redis_url
    if redis_url is None and not config.sentinel:
        embedded = EmbeddedRedis()
        embedded.start()
        redis_url = embedded.url
        log.info("no --redis-url: started embedded valkey at %s for every process", redis_url)
    host, _, port = config.listen.rpartition(":")
    if port == "0":
        port = str(free_port())
    # The children keep metrics in files here and the supervisor serves their sum (metrics.py).
    metrics_dir = tempfile.TemporaryDirectory(prefix="livestate-metrics-") if config.metrics_listen else None
    child_config = dataclasses.replace(
        config, redis_url=redis_url, listen=f"{host}:{port}", processes="1", metrics_listen=None
    )
    env = child_environment(child_config)
    metrics_http = fleet = None
    if metrics_dir is not None:
        assert config.metrics_listen is not None
        env["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name
        # The status page's own reader: the children's snapshots live in their processes.
        fleet = FleetMetrics(Runtime.build(child_config, connection.connect(redis_url, child_config)))
        fleet.start()
        metrics_http = MetricsServer(config.metrics_listen, lambda: fleet.snapshot if fleet else None)
        metrics_http.start()

    done = stop_requested(f"draining {config.process_count} server processes")

    children = [_Child(slot, env) for slot in range(config.process_count)]
    for child in children:
        child.start()
    log.info("livestate serving on %s:%s with %d processes", host, port, len(children))
    try:
        while not done.wait(0.2):
            for child in children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is None:
                    continue
                if time.monotonic() - child.started < RESTART_BACKOFF and done.wait(RESTART_BACKOFF):
                    break
                log.warning(
                    "server process %d (pid %d) exited with %s: starting it again",
                    child.slot,
                    child.proc.pid,
                    code,
                )
                if metrics_dir is not None:
                    multiprocess.mark_process_dead(child.proc.pid)  # its open-stream counts end
                child.start()
    finally:
        _drain(children, config.shutdown_grace + 5)
        if metrics_http is not None:
            metrics_http.stop()
        if fleet is not None:
            fleet.stop()
            fleet.rt.client.close()
        if metrics_dir is not None:
            metrics_dir.cleanup()
        if embedded is not None:
            embedded.stop()
    return 0


def _drain(children: list[_Child], timeout: float) -> None:
    procs = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("server process pid %d did not drain in time: killed", proc.pid)
            proc.kill()
            proc.wait()
