"""Every core behind one port: `livestate serve --processes N` runs N servers sharing the port,
replaces a child that dies and drains them all on SIGTERM; only one process sweeps at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ServerFactory
from harness import Harness, wait_for
from livestate.server.store.embedded import free_port

LIVESTATE = str(Path(sys.executable).parent / "livestate")


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def supervisor(redis_url: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {**os.environ, "LIVESTATE_REDIS_URL": redis_url, "LIVESTATE_SHUTDOWN_GRACE": "1"}
    proc = subprocess.Popen(
        [
            LIVESTATE,
            "serve",
            "--processes",
            "2",
            "--listen",
            f"127.0.0.1:{port}",
            "--heartbeat-interval",
            "0.5",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for child in _children(proc.pid):
        os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(60)
def test_processes_share_the_port_a_dead_one_is_replaced_and_sigterm_drains_all(
    supervisor: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = supervisor
    wait_for(lambda: len(_children(proc.pid)) == 2 and _serving(port), timeout=30)
    first = _children(proc.pid)

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(_children(proc.pid) - {victim}) == 2, timeout=15)
    assert victim not in _children(proc.pid)
    wait_for(lambda: _serving(port), timeout=15)

    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not any(Path(f"/proc/{child}").exists() for child in children)
    assert not _serving(port)


def test_one_process_sweeps_at_a_time_and_another_takes_over(make_server: ServerFactory) -> None:
    servers = [make_server(sweep_interval=0.1), make_server(sweep_interval=0.1)]
    wait_for(lambda: sum(s.server.maintenance.sweeps for s in servers) > 5)

    def holder() -> Harness:
        token = servers[0].redis.get(servers[0].server.rt.keys.sweeper)
        return next(s for s in servers if s.server.maintenance.token == token)

    sweeping = holder()
    other = next(s for s in servers if s is not sweeping)
    ticks = [s.server.maintenance.ticks for s in servers]
    sweeps = [s.server.maintenance.sweeps for s in servers]
    wait_for(lambda: min(s.server.maintenance.ticks - t for s, t in zip(servers, ticks, strict=True)) >= 10)
    swept = sum(s.server.maintenance.sweeps for s in servers) - sum(sweeps)
    # One process's worth of sweeps, not two: at most as many as the busier process ticked (a
    # stalled holder may hand the lease over, which moves sweeps but does not add any).
    assert swept <= max(s.server.maintenance.ticks - t for s, t in zip(servers, ticks, strict=True)) + 2

    before = other.server.maintenance.sweeps
    sweeping.server.stop(grace=0)
    wait_for(lambda: other.server.maintenance.sweeps > before + 3)
