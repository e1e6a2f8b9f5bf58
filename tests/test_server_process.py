"""`livestate serve` as a process: embedded Valkey, config from env, health, reflection, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from harness import IDLE, spec, wait_for
from livestate.server.process.app import SERVICE_NAMES
from livestate.server.store.embedded import free_port
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import heartbeat_service_pb2_grpc as hb_grpc

LIVESTATE = str(Path(sys.executable).parent / "livestate")


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def output(self) -> str:
        self.proc.wait(timeout=15)
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@pytest.fixture
def served() -> Iterator[Served]:
    port = free_port()
    env = {**os.environ, "LIVESTATE_HEARTBEAT_INTERVAL": "0.5", "LIVESTATE_SHUTDOWN_GRACE": "1"}
    env.pop("LIVESTATE_REDIS_URL", None)
    proc = subprocess.Popen(
        [LIVESTATE, "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    s = Served(proc, port)
    grpc.channel_ready_future(s.channel).result(timeout=15)
    yield s
    s.channel.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def test_serve_without_redis_url_uses_embedded_valkey_and_env_config(served: Served) -> None:
    stub = hb_grpc.HeartbeatServiceStub(served.channel)
    response = stub.Register(hb.RegisterRequest(node=spec("gpu-1"), boot_id="b1"), timeout=5)
    assert response.heartbeat_interval.ToMilliseconds() == 500  # from LIVESTATE_HEARTBEAT_INTERVAL

    health = health_pb2_grpc.HealthStub(served.channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    wait_for(
        lambda: all(
            health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
            for name in SERVICE_NAMES
        )
    )

    services = set(ProtoReflectionDescriptorDatabase(served.channel).get_services())
    assert set(SERVICE_NAMES) <= services
    assert "grpc.health.v1.Health" in services

    served.proc.send_signal(signal.SIGTERM)
    log = served.output()
    assert served.proc.returncode == 0, log
    match = re.search(r"embedded valkey at redis://127\.0\.0\.1:(\d+)", log)
    assert match, log
    # The embedded Valkey stopped with the server.
    valkey_port = int(match.group(1))
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", valkey_port)) != 0


def test_sigterm_drains_open_streams_within_grace(served: Served) -> None:
    stub = hb_grpc.HeartbeatServiceStub(served.channel)
    stub.Register(hb.RegisterRequest(node=spec("gpu-1"), boot_id="b1"), timeout=5)
    hold = threading.Event()

    def agent() -> Iterator[hb.HeartbeatRequest]:
        yield hb.HeartbeatRequest(node_id="gpu-1", boot_id="b1", seq=1, state=IDLE)
        hold.wait(30)  # keep the stream open, as a live agent does

    responses = stub.Heartbeat(agent(), timeout=30)
    assert not next(responses).resync_required

    served.proc.send_signal(signal.SIGTERM)
    try:
        with pytest.raises(grpc.RpcError):
            next(responses)  # the server ends the open stream once the grace period is over
        served.output()
    finally:
        hold.set()

    assert served.proc.returncode == 0  # drained and exited (output() waits for it)


def test_bad_configuration_exits_with_a_message() -> None:
    result = subprocess.run(
        [LIVESTATE, "serve", "--suspect-after", "5", "--offline-after", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "suspect_after < offline_after" in result.stderr
