"""Prometheus metrics at /metrics: RPCs by method and code, streams, refusals, Redis round trips,
beat batches, sweeps, the fleet gauges, and --processes summing its children."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerFactory
from harness import ONLINE, Harness, Stream, enqueue, spec, wait_for
from livestate.client import NodeAgent
from livestate.server.core import logs
from livestate.server.store.embedded import free_ports
from livestate.v1 import flag_pb2
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import match_service_pb2 as mpb

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture
def metered(make_server: ServerFactory) -> Harness:
    return make_server(metrics_listen="127.0.0.1:0")


def _port(ls: Harness) -> int:
    assert ls.server.metrics_http is not None
    return ls.server.metrics_http.port


def test_rpcs_are_counted_by_method_and_code_and_timed(metered: Harness) -> None:
    rpc = {"grpc_service": "livestate.v1.MatchService", "grpc_method": "Match"}
    before = scrape(_port(metered))
    metered.register("gpu-1")
    lease = metered.match("job-1").lease
    metered.release(lease)
    with pytest.raises(grpc.RpcError):
        metered.match_stub.Match(mpb.MatchRequest(job_id=""), timeout=5)

    after = scrape(_port(metered))
    delta = {
        code: value(after, "grpc_server_handled_total", grpc_code=code, **rpc)
        - value(before, "grpc_server_handled_total", grpc_code=code, **rpc)
        for code in ("OK", "INVALID_ARGUMENT")
    }
    assert delta == {"OK": 1, "INVALID_ARGUMENT": 1}
    started = value(after, "grpc_server_started_total", **rpc) - value(
        before, "grpc_server_started_total", **rpc
    )
    assert started == 2
    timed = value(after, "grpc_server_handling_seconds_count", grpc_type="unary", **rpc) - value(
        before, "grpc_server_handling_seconds_count", grpc_type="unary", **rpc
    )
    assert timed == 2
    assert value(after, "grpc_server_handled_total", grpc_method="Register", grpc_code="OK") >= 1
    # Redis round trips, on the worker threads' client and on the event loop's batcher.
    assert value(after, "livestate_redis_roundtrip_seconds_count", path="pipeline") > 0
    assert value(after, "livestate_redis_roundtrip_seconds_count", path="loop") > 0
    assert value(after, "livestate_beat_batch_size_count") > 0


def test_open_streams_and_refusals_are_counted(make_server: ServerFactory) -> None:
    ls = make_server(metrics_listen="127.0.0.1:0", max_watchers=1)
    before = scrape(_port(ls))
    stream = Stream(ls, "sched-metrics")
    try:
        wait_for(lambda: value(scrape(_port(ls)), "livestate_streams_open", kind="watcher") == 1)
        refused = Stream(ls, "sched-metrics-2")
        wait_for(lambda: refused.error is not None)
        assert refused.error is not None and refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        stream.close()
    after = scrape(_port(ls))
    assert (
        value(after, "livestate_refused_total", reason="STREAM_BUDGET")
        - value(before, "livestate_refused_total", reason="STREAM_BUDGET")
        == 1
    )
    wait_for(lambda: value(scrape(_port(ls)), "livestate_streams_open", kind="watcher") == 0)


def test_fleet_gauges_show_nodes_queues_and_flags(metered: Harness) -> None:
    region = f"metrics-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        metered.register(f"{region}-gpu-{i}", region=region)
    metered.register(f"{region}-gpu-h", region=region, models=["mixtral-8x7b"])
    metered.flags.SetFlag(
        fpb.SetFlagRequest(node_id=f"{region}-gpu-0", kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5
    )
    enqueue(metered, "job-waits", model="no-node-has-it", regions=[region])

    fleet = metered.server.fleet_metrics
    assert fleet is not None
    fleet.read()
    got = scrape(_port(metered))

    where = {"env": "test", "region": region}
    assert value(got, "livestate_nodes", liveness="ONLINE", **where) == 4
    assert value(got, "livestate_nodes", liveness="OFFLINE", **where) == 0
    assert value(got, "livestate_idle_nodes", model="llama-3-8b", **where) == 3
    assert value(got, "livestate_idle_nodes", model="mixtral-8x7b", **where) == 1
    assert value(got, "livestate_queue_depth", model="no-node-has-it", **where) == 1
    assert 0 <= value(got, "livestate_queue_head_wait_seconds", model="no-node-has-it", **where) < 60
    assert value(got, "livestate_flags_in_force", kind="FLAG_KIND_PAUSE") >= 1
    assert value(got, "livestate_fleet_read_seconds_count") >= 0


def test_sweeps_are_timed(metered: Harness) -> None:
    wait_for(lambda: value(scrape(_port(metered)), "livestate_sweep_seconds_count") > 0)
    assert "livestate_sweep_lag_seconds" in {name for name, _ in scrape(_port(metered))}


def test_other_paths_answer_not_found(metered: Harness) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{_port(metered)}/nothing-here", timeout=5)
    missing.value.close()
    assert missing.value.code == 404


def test_json_logs_are_one_object_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("livestate.test").exception("it broke: %s", "badly")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    (line,) = capsys.readouterr().err.strip().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "livestate.test"
    assert entry["message"] == "it broke: badly"
    assert "ValueError: boom" in entry["exception"]


@pytest.fixture
def two_processes(redis_url: str) -> Iterator[tuple[int, int]]:
    """`livestate serve --processes 2 --metrics-listen`: the gRPC and the metrics port."""
    port, metrics_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVESTATE_", "PROMETHEUS_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "livestate.server.process.cli",
            "serve",
            "--processes",
            "2",
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
            "--redis-url",
            redis_url,
            "--key-prefix",
            f"m{uuid.uuid4().hex[:6]}",
        ],
        env=env,
    )
    try:
        yield port, metrics_port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.single_redis
def test_with_processes_metrics_sum_every_child(two_processes: tuple[int, int]) -> None:
    port, metrics_port = two_processes
    health = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}

    def checked() -> float:
        try:
            return value(scrape(metrics_port), "grpc_server_handled_total", grpc_code="OK", **health)
        except OSError:  # the supervisor is not listening yet
            return -1

    wait_for(lambda: checked() >= 0, timeout=20)
    # Each call on a channel of its own, so the kernel spreads them over both children; the
    # supervisor's /metrics must count every one, whichever child answered.
    calls = 0
    for _ in range(20):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            calls += wait_for(lambda stub=stub: _serving(stub), timeout=20)  # type: ignore[misc]
    wait_for(lambda: checked() == calls, timeout=10)


def _serving(stub: health_pb2_grpc.HealthStub) -> int:
    """1 when a Check answered SERVING; 0 when it failed (not counted as OK)."""
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.RpcError:
        return 0
    return int(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_heartbeat_streams_are_served_and_counted_with_metrics_on(metered: Harness) -> None:
    rpc = {"grpc_service": "livestate.v1.HeartbeatService", "grpc_method": "Heartbeat"}
    before = value(scrape(_port(metered)), "grpc_server_handled_total", grpc_type="bidi_stream", **rpc)
    agent = NodeAgent(f"127.0.0.1:{metered.port}", spec("gpu-stream"))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: value(scrape(_port(metered)), "livestate_streams_open", kind="agent") >= 1)
        wait_for(lambda: metered.liveness("gpu-stream") == ONLINE)
    finally:
        stop.set()
        thread.join()
        agent.close()
    wait_for(
        lambda: (
            value(scrape(_port(metered)), "grpc_server_handled_total", grpc_type="bidi_stream", **rpc)
            > before
        )
    )
