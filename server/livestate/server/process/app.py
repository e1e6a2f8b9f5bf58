"""Assembling the server: gRPC, health, reflection, Redis, and the background loops.

`create_server(config)` builds everything and binds (port 0 works, for tests); `LivestateServer`
starts and stops it; `serve(config)` runs it until SIGTERM/SIGINT and drains gracefully.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import sys
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from livestate.server.api.auth import AuthInterceptor, TokenTable
from livestate.server.api.budgets import StreamBudgets
from livestate.server.api.decoding import DecodeRequests
from livestate.server.api.edge import Collector, Edge, EventLoop
from livestate.server.api.flag_servicer import FlagServicer
from livestate.server.api.heartbeat_servicer import HeartbeatServicer
from livestate.server.api.match_servicer import MatchServicer
from livestate.server.api.node_servicer import NodeServicer
from livestate.server.api.queue_servicer import QueueServicer
from livestate.server.api.rpc_metrics import RpcMetrics
from livestate.server.api.subcloud_servicer import SubcloudServicer
from livestate.server.core.config import Config, ConfigError
from livestate.server.core.signals import stop_requested
from livestate.server.process.fallback import CENTRAL, REGIONAL, Fallback
from livestate.server.process.fleet_metrics import FleetMetrics, FleetSnapshot
from livestate.server.process.maintenance import Maintenance
from livestate.server.process.metrics_http import MetricsServer
from livestate.server.store import connection
from livestate.server.store.embedded import EmbeddedRedis
from livestate.server.store.runtime import Runtime
from livestate.v1 import (
    flag_service_pb2,
    flag_service_pb2_grpc,
    heartbeat_service_pb2,
    heartbeat_service_pb2_grpc,
    match_service_pb2,
    match_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
    subcloud_service_pb2,
    subcloud_service_pb2_grpc,
)

log = logging.getLogger(__name__)

MATCH_SERVICE = match_service_pb2.DESCRIPTOR.services_by_name["MatchService"].full_name
MATCH, RELEASE = f"/{MATCH_SERVICE}/Match", f"/{MATCH_SERVICE}/Release"
HEARTBEAT = "/{}/Heartbeat".format(
    heartbeat_service_pb2.DESCRIPTOR.services_by_name["HeartbeatService"].full_name
)

# Threads for the Heartbeat streams' blocking work: a handful of Redis round trips each, rare
# beside the beats themselves (which wait on the batcher, on no thread).
STREAM_WORKERS = 8

# Every livestate service needs Redis, so each one's health status is Redis readiness.
SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (heartbeat_service_pb2, "HeartbeatService"),
        (match_service_pb2, "MatchService"),
        (flag_service_pb2, "FlagService"),
        (queue_service_pb2, "QueueService"),
        (node_service_pb2, "NodeService"),
        (subcloud_service_pb2, "SubcloudService"),
    )
)

# With a fallback Redis (fallback.py), the one in use: its name SERVING, the other NOT_SERVING.
STORE_HEALTH = {REGIONAL: "livestate.redis.regional", CENTRAL: "livestate.redis.central"}


def metrics_on(config: Config) -> bool:
    """Metrics are kept when this process serves them, or when it is a child of `--processes`
    whose supervisor serves what the children write (PROMETHEUS_MULTIPROC_DIR)."""
    return config.metrics_listen is not None or "PROMETHEUS_MULTIPROC_DIR" in os.environ


def check_exposure(config: Config, tokens: TokenTable | None) -> None:
    """Beyond loopback the server wants both tokens and TLS, unless told --insecure."""
    host = config.listen.rsplit(":", 1)[0].strip("[]")
    if _is_loopback(host) or (tokens is not None and config.tls_cert):
        return
    if not config.insecure:
        raise ConfigError(
            f"refusing to listen on {config.listen} without auth (--auth-file) and TLS "
            "(--tls-cert/--tls-key); pass --insecure to do it anyway"
        )
    log.warning(
        "listening on %s without %s: anyone who can reach it can call it",
        config.listen,
        "auth and TLS" if tokens is None and not config.tls_cert else "auth" if tokens is None else "TLS",
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class LivestateServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        try:
            self.tokens = TokenTable.load(config.auth_file, config.auth_tokens)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"auth tokens: {exc}") from exc
        check_exposure(config, self.tokens)
        self.embedded: EmbeddedRedis | None = None
        redis_url = config.redis_url
        if redis_url is None and not config.sentinel:
            self.embedded = EmbeddedRedis()
            self.embedded.start()
            redis_url = self.embedded.url
            log.info("no --redis-url: started embedded valkey at %s", redis_url)
        self.redis_url = redis_url
        self.client = connection.connect(redis_url, config)
        self.rt = Runtime.build(config, self.client)

        self.budgets = StreamBudgets(config)
        # Blocking handlers run here; sized to the budgets (config.py), so watchers and waiting
        # Matches past their caps are refused and never hold the threads unary RPCs need.
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_workers, thread_name_prefix="rpc"
        )
        access = AuthInterceptor(self.tokens) if self.tokens else None
        collected = Collector()
        heartbeat = HeartbeatServicer(self.rt)
        heartbeat_service_pb2_grpc.add_HeartbeatServiceServicer_to_server(heartbeat, collected)
        node_service_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(self.rt), collected)
        match = MatchServicer(self.rt)
        match_service_pb2_grpc.add_MatchServiceServicer_to_server(match, collected)
        flag_service_pb2_grpc.add_FlagServiceServicer_to_server(FlagServicer(self.rt), collected)
        queue_service_pb2_grpc.add_QueueServiceServicer_to_server(QueueServicer(self.rt), collected)
        subcloud_service_pb2_grpc.add_SubcloudServiceServicer_to_server(SubcloudServicer(self.rt), collected)
        # Auth first: a caller without the right token learns nothing, not even decode errors;
        # and budgets count streams per identity.
        self.edge = Edge(
            collected.handlers,
            [*([access] if access else []), self.budgets, DecodeRequests()],
            self.pool,
            access,
        )
        # The streams' own blocking work (lookups after a resync, settling jobs handed to a node).
        self.stream_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=STREAM_WORKERS, thread_name_prefix="stream"
        )
        self.edge.serve_on_loop(
            HEARTBEAT,
            heartbeat.Heartbeat,
            budget=self.budgets.streams,
            idle_after=config.stream_idle_after,
            pool=self.stream_pool,
        )
        # A plain Match and a Release need no thread: their round trips go through the batcher.
        self.edge.try_on_loop(MATCH, match.match_on_loop, match.Match)
        self.edge.try_on_loop(RELEASE, match.release_on_loop, match.Release)
        self.loop = EventLoop.shared()
        self.health = health_aio.HealthServicer()
        self.grpc, self.port = self.loop.run(self._build(config))
        if self.port == 0:
            raise OSError(f"cannot listen on {config.listen}")
        self.fleet_metrics = FleetMetrics(self.rt) if metrics_on(config) else None
        self.metrics_http = (
            MetricsServer(config.metrics_listen, self._fleet_snapshot) if config.metrics_listen else None
        )
        self.fallback = Fallback(self.rt, config, self._store_switched) if config.fallback_redis_url else None
        self.maintenance = Maintenance(self.rt, self._set_ready, self.fallback)
        self._stopped = threading.Event()
        self._started = False
        self._paced = False

    async def _build(self, config: Config) -> tuple[grpc.aio.Server, int]:
        """The gRPC server, made on the loop that serves it."""
        server = grpc.aio.server(
            interceptors=[RpcMetrics()] if metrics_on(config) else [],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_metadata_size", 16 * 1024),
                # Agents keep streams open for hours: let them ping every 10 s without a GOAWAY.
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
            ],
        )
        server.add_generic_rpc_handlers((self.edge,))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection((*SERVICE_NAMES, health_name, reflection.SERVICE_NAME), server)
        return server, self._bind(server, config)

    @staticmethod
    def _bind(server: grpc.aio.Server, config: Config) -> int:
        if config.tls_cert and config.tls_key:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())],
                root_certificates=Path(config.tls_ca).read_bytes() if config.tls_ca else None,
                require_client_auth=bool(config.tls_ca),
            )
            return server.add_secure_port(config.listen, credentials)
        return server.add_insecure_port(config.listen)

    def _fleet_snapshot(self) -> FleetSnapshot | None:
        return self.fleet_metrics.snapshot if self.fleet_metrics is not None else None

    def _set_ready(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.loop.run(self._set_health(SERVICE_NAMES, status), timeout=5)

    def _store_switched(self, active: str) -> None:
        """Health names the Redis in use: its service name SERVING, the other NOT_SERVING."""
        for name, service in STORE_HEALTH.items():
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if name == active
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            self.loop.run(self._set_health((service,), status), timeout=5)

    async def _set_health(self, names: tuple[str, ...], status: int) -> None:
        for name in names:
            await self.health.set(name, status)

    def start(self) -> int:
        self.loop.run(self._set_health(("",), health_pb2.HealthCheckResponse.SERVING))
        self._set_ready(False)
        if self.fallback is not None:
            self._store_switched(self.fallback.active)
        try:
            self.rt.scripts.load()
            self.rt.epoch.refresh()
        except Exception as exc:  # start anyway; RPCs answer UNAVAILABLE until Redis answers
            log.warning("redis not answering at start-up: %s", exc)
        self._started = True
        self._paced = self.loop.pacer.acquire(self.config.gc_interval)
        self.rt.batcher.start(self.loop.loop)
        self.rt.notifier.start()
        self.maintenance.start()
        if self.fleet_metrics is not None:
            self.fleet_metrics.start()
        if self.metrics_http is not None:
            self.metrics_http.start()
        self.loop.run(self.grpc.start())
        log.info(
            "livestate serving on port %d (redis %s)",
            self.port,
            connection.describe(self.redis_url, self.config),
        )
        return self.port

    def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.loop.run(self.health.enter_graceful_shutdown())
        # Ends every call (in-flight ones get the grace), then waits for the blocking handlers
        # still running: they end at their next check of the call (CallContext.is_active), and
        # none may touch Redis after its client is closed below.
        self.loop.run(self.grpc.stop(self.config.shutdown_grace if grace is None else grace))
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.stream_pool.shutdown(wait=True, cancel_futures=True)
        if self._started:
            self.maintenance.stop()
            self.rt.notifier.stop()
            self.rt.batcher.stop()
            if self._paced:
                self.loop.pacer.release()
        if self.metrics_http is not None:
            self.metrics_http.stop()
        if self.fleet_metrics is not None:
            self.fleet_metrics.stop()
        if self.fallback is not None:
            self.fallback.close()
        self.client.close()
        if self.embedded is not None:
            self.embedded.stop()

    def wait(self) -> None:
        self._stopped.wait()


def create_server(config: Config) -> LivestateServer:
    return LivestateServer(config)


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
# event loop is busy with thousands of streams; a Match thread coming back from each of its Redis
# round trips would wait up to this long every time.
SWITCH_INTERVAL = 0.001


def serve(config: Config) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)
    server = create_server(config)
    server.start()
    stop_requested(f"draining (grace {config.shutdown_grace:.1f}s)").wait()
    server.stop()
