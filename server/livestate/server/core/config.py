"""Server configuration: every timing and limit, from flags and `LIVESTATE_*` env vars.

Durations are seconds as floats (fractions allowed, so tests run with `--heartbeat-interval 0.2`).
Precedence: command-line flag, then env var, then default. Derived defaults follow DESIGN.md:
SUSPECT after 3 missed beats, OFFLINE after 5.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence

ENV_PREFIX = "LIVESTATE_"


class ConfigError(ValueError):
    """A configuration value is missing, malformed or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    # Server processes sharing the listen port (SO_REUSEPORT) under one supervisor; "auto" = one
    # per core.
    processes: str = "1"
    # None: start an embedded Valkey on a free loopback port.
    redis_url: str | None = None
    key_prefix: str = "ls"
    # redis_url names a seed node of a Redis Cluster: keys are spread over its shards by their
    # partition hash tags (keys.py), and every script runs on one slot.
    redis_cluster: bool = False
    # Redis Sentinel instead of a URL: the sentinels ("host:port,host:port") and the master's name.
    sentinel: str | None = None
    sentinel_master: str = "mymaster"
    # Replicas that must acknowledge a write (WAIT) before its answer goes out (replication.py);
    # -1 = 1 with --sentinel, 0 otherwise. ack_timeout bounds each WAIT; 0 = redis_timeout / 2.
    ack_replicas: int = -1
    ack_timeout: float = 0.0
    # Regional Redis with a central fallback (fallback.py): while the Redis above does not answer
    # for fallback_after seconds, this process serves from fallback_redis_url; it goes back once
    # the regional one has answered for fallback_return_after seconds.
    fallback_redis_url: str | None = None
    fallback_after: float = 10.0
    fallback_return_after: float = 30.0
    heartbeat_interval: float = 2.0
    # 0 means derived from heartbeat_interval (3 and 5 missed beats).
    suspect_after: float = 0.0
    offline_after: float = 0.0
    # How long an OFFLINE node stays readable before its keys are forgotten.
    retention: float = 3600.0
    # How often each server process runs the liveness sweep; 0 = min(0.5, interval / 2).
    sweep_interval: float = 0.0
    sweep_batch: int = 1000
    # A partition nobody swept for this long was not being heard (Redis frozen or unreachable,
    # every server down): silence from then on is not held against its nodes. 0 = max(1, 4 sweeps).
    sweep_gap: float = 0.0
    # Socket timeout for every Redis call: bounds how long an RPC can wait on a frozen Redis.
    redis_timeout: float = 1.0
    redis_max_connections: int = 64
    # Budgets: long-lived calls each have their own cap, so they can never take what unary RPCs
    # (Match, Renew, Release, Beat, ...) need (see budgets.py).
    # Agent Heartbeat streams per process (served on the event loop: no thread each), and per
    # identity when access control is on.
    max_streams: int = 10_000
    max_streams_per_identity: int = 4
    # Watch and Assignments streams per process (each steps on a worker thread).
    max_watchers: int = 256
    # Threads kept for unary RPCs whatever the streams do.
    unary_workers: int = 64
    # A Heartbeat stream that sends nothing for this long is closed; 0 = offline_after.
    stream_idle_after: float = 0.0
    # Worker threads for blocking handlers; 0 = derived: max_watchers + max_waiting_matches +
    # unary_workers (threads are started as needed). RPCs in flight; 0 = derived: max_streams +
    # max_workers + a queue of 3 x unary_workers for bursts.
    max_workers: int = 0
    max_concurrent_rpcs: int = 0
    max_message_bytes: int = 256 * 1024
    events_maxlen: int = 10_000
    shutdown_grace: float = 5.0
    # Leases and matching.
    lease_ttl: float = 60.0
    max_lease_ttl: float = 86_400.0
    match_walk: int = 256
    # Waiting: Match with wait holds a server thread, so both how many and how long are bounded.
    max_waiting_matches: int = 64
    max_wait: float = 300.0
    queue_ttl: float = 300.0
    # How long each process keeps subcloud policies: a Put reaches every process within this.
    subcloud_cache_ttl: float = 2.0
    max_queue_ttl: float = 86_400.0
    job_ttl: float = 3600.0
    # An assignment its caller has not recorded on the job within this long (a crash, a timeout
    # between the claim and the record) is recorded by the next sweep of any process.
    outbox_settle_after: float = 2.0
    # A partition that has held no node, lease or waiting job for this long leaves the catalogue.
    drop_empty_after: float = 300.0
    # Failure scoring: each Fail adds 1 to the node's score, which halves every half-life.
    failure_half_life: float = 600.0
    cooldown_score: float = 3.0
    cooldown_ttl: float = 300.0
    quarantine_score: float = 6.0
    quarantine_ttl: float = 3600.0
    # Access control and transport security.
    auth_file: str | None = None
    auth_tokens: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    insecure: bool = False
    log_level: str = "INFO"
    # "text" (one line a record) or "json" (one JSON object a line, for log shippers).
    log_format: str = "text"
    # HOST:PORT serving Prometheus metrics at /metrics (metrics_http.py); none when unset.
    metrics_listen: str | None = None
    # Garbage collection paced on the event loop (gcpacing.py); 0 = CPython's own collector.
    gc_interval: float = 0.1

    def __post_init__(self) -> None:
        if self.suspect_after == 0:
            object.__setattr__(self, "suspect_after", 3 * self.heartbeat_interval)
        if self.offline_after == 0:
            object.__setattr__(self, "offline_after", 5 * self.heartbeat_interval)
        if self.sweep_interval == 0:
            object.__setattr__(self, "sweep_interval", min(0.5, self.heartbeat_interval / 2))
        if self.sweep_gap == 0:
            object.__setattr__(self, "sweep_gap", max(1.0, 4 * self.sweep_interval))
        if self.stream_idle_after == 0:
            object.__setattr__(self, "stream_idle_after", self.offline_after)
        if self.ack_timeout == 0:
            object.__setattr__(self, "ack_timeout", self.redis_timeout / 2)
        if self.max_workers == 0:
            object.__setattr__(self, "max_workers", self.thread_budgets)
        if self.max_concurrent_rpcs == 0:
            # Unary bursts past the reserve queue for a free thread rather than being refused.
            object.__setattr__(
                self, "max_concurrent_rpcs", self.max_streams + self.max_workers + 3 * self.unary_workers
            )
        self._check()

    def _check(self) -> None:
        if self.heartbeat_interval <= 0:
            raise ConfigError("heartbeat_interval must be > 0")
        if not self.heartbeat_interval <= self.suspect_after < self.offline_after:
            raise ConfigError(
                "need heartbeat_interval <= suspect_after < offline_after, got "
                f"{self.heartbeat_interval} / {self.suspect_after} / {self.offline_after}"
            )
        for name in (
            "retention",
            "sweep_interval",
            "sweep_gap",
            "redis_timeout",
            "shutdown_grace",
            "lease_ttl",
            "max_lease_ttl",
            "job_ttl",
            "outbox_settle_after",
            "drop_empty_after",
            "failure_half_life",
            "cooldown_score",
            "cooldown_ttl",
            "quarantine_score",
            "quarantine_ttl",
            "max_wait",
            "queue_ttl",
            "max_queue_ttl",
            "subcloud_cache_ttl",
            "fallback_after",
            "fallback_return_after",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.lease_ttl > self.max_lease_ttl:
            raise ConfigError("lease_ttl must be <= max_lease_ttl")
        if self.cooldown_score > self.quarantine_score:
            raise ConfigError("cooldown_score must be <= quarantine_score")
        for name in (
            "max_waiting_matches",
            "match_walk",
            "sweep_batch",
            "redis_max_connections",
            "max_streams",
            "max_streams_per_identity",
            "max_watchers",
            "unary_workers",
            "max_message_bytes",
            "events_maxlen",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.max_workers < self.thread_budgets:
            raise ConfigError(
                f"max_workers ({self.max_workers}) must cover max_watchers + max_waiting_matches + "
                f"unary_workers ({self.thread_budgets}), or be 0 to derive it"
            )
        if self.max_concurrent_rpcs < self.max_streams + self.max_workers:
            raise ConfigError(
                f"max_concurrent_rpcs ({self.max_concurrent_rpcs}) must cover max_streams + max_workers "
                f"({self.max_streams + self.max_workers}), or be 0 to derive it"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be 'text' or 'json', got {self.log_format!r}")
        if self.metrics_listen is not None and self.metrics_listen.rpartition(":")[0] == "":
            raise ConfigError(f"metrics_listen must be HOST:PORT, got {self.metrics_listen!r}")
        if self.processes != "auto" and not (self.processes.isdigit() and int(self.processes) >= 1):
            raise ConfigError(f"processes must be a number >= 1 or 'auto', got {self.processes!r}")
        if self.stream_idle_after <= 0:
            raise ConfigError("stream_idle_after must be > 0")
        if self.gc_interval < 0:
            raise ConfigError("gc_interval must be >= 0")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        if self.tls_ca and not self.tls_cert:
            raise ConfigError("tls_ca (client certificates) needs tls_cert and tls_key")
        if self.sentinel is not None:
            if self.redis_url is not None:
                raise ConfigError("sentinel and redis_url exclude each other: the sentinels name the master")
            sentinels(self.sentinel)
        if self.redis_cluster:
            if self.redis_url is None:
                raise ConfigError("redis_cluster needs redis_url: any node of the cluster, as a seed")
            if self.sentinel is not None or self.fallback_redis_url is not None:
                raise ConfigError("redis_cluster cannot be combined with sentinel or fallback_redis_url")
        if self.fallback_redis_url is not None:
            if self.redis_url is None and self.sentinel is None:
                raise ConfigError("fallback_redis_url needs a regional redis_url or sentinel to leave")
            if self.fallback_redis_url == self.redis_url:
                raise ConfigError("fallback_redis_url must name another Redis than redis_url")
        if self.ack_replicas < -1:
            raise ConfigError("ack_replicas must be >= 0 (or -1: 1 with sentinel, else 0)")
        if self.ack_timeout <= 0:
            raise ConfigError("ack_timeout must be > 0")
        if self.replicas_to_ack and self.ack_timeout >= self.redis_timeout:
            raise ConfigError("ack_timeout must be below redis_timeout (the WAIT must end first)")
        if not self.key_prefix or any(c in self.key_prefix for c in "{}: "):
            raise ConfigError("key_prefix must be non-empty without '{', '}', ':' or spaces")

    @property
    def replicas_to_ack(self) -> int:
        if self.ack_replicas >= 0:
            return self.ack_replicas
        return 1 if self.sentinel else 0

    @property
    def thread_budgets(self) -> int:
        """The worker threads the budgets call for (see max_workers)."""
        return self.max_watchers + self.max_waiting_matches + self.unary_workers

    @property
    def process_count(self) -> int:
        return (os.cpu_count() or 1) if self.processes == "auto" else int(self.processes)

    @property
    def node_ttl(self) -> float:
        """A live node record outlives its last beat by offline_after + retention (+ margin)."""
        return self.offline_after + self.retention + self.forget_margin

    @property
    def forget_margin(self) -> float:
        # The sweeper forgets an OFFLINE node at `retention`; its keys expire a little later, so
        # eviction is only the fallback for when no server process is running at all.
        return max(60.0, 10 * self.sweep_interval)


def sentinels(value: str) -> list[tuple[str, int]]:
    """'host:port,host:port' as (host, port) pairs; ConfigError names what is wrong."""
    found = []
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"sentinel must be host:port[,host:port...], got {item.strip()!r}")
        found.append((host, int(port)))
    return found


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}

_HELP = {
    "listen": "HOST:PORT to serve gRPC on",
    "processes": "server processes sharing the port (SO_REUSEPORT); 'auto' = one per core",
    "redis_url": "redis:// or unix:// URL; unset starts an embedded Valkey on a free loopback port",
    "key_prefix": "prefix of every Redis key",
    "redis_cluster": "redis_url is a seed node of a Redis Cluster",
    "sentinel": "Redis Sentinel HOST:PORT[,HOST:PORT...] to find the master by (instead of redis_url)",
    "sentinel_master": "the master's name the sentinels monitor",
    "fallback_redis_url": "central Redis URL to serve from while the regional one does not answer",
    "fallback_after": "seconds the regional Redis may not answer before this process falls back",
    "fallback_return_after": "seconds the regional Redis must answer before this process goes back to it",
    "ack_replicas": "replicas that must acknowledge a write before it is answered (-1 = 1 with sentinel)",
    "ack_timeout": "seconds a write waits for its replicas before failing UNAVAILABLE (0 = redis_timeout/2)",
    "outbox_settle_after": "seconds after which a sweep records an assignment its caller did not",
    "drop_empty_after": "seconds a partition may hold nothing before it leaves the catalogue",
    "heartbeat_interval": "seconds between agent heartbeats",
    "suspect_after": "seconds without a beat before a node is SUSPECT (default 3 intervals)",
    "offline_after": "seconds without a beat before a node is OFFLINE (default 5 intervals)",
    "retention": "seconds an OFFLINE node stays readable",
    "sweep_interval": "seconds between liveness sweeps (default min(0.5, interval/2))",
    "sweep_batch": "nodes moved per partition and stage per sweep call",
    "sweep_gap": "seconds unswept after which a partition's silence is not held against its nodes",
    "redis_timeout": "seconds a Redis call may take before the RPC fails UNAVAILABLE",
    "redis_max_connections": "Redis connection pool size",
    "max_streams": "agent Heartbeat streams per process; past it RESOURCE_EXHAUSTED",
    "max_streams_per_identity": "open streams per token identity when access control is on",
    "max_watchers": "Watch and Assignments streams per process",
    "unary_workers": "threads kept for unary RPCs whatever the streams do",
    "stream_idle_after": "seconds a silent Heartbeat stream stays open (0 = offline_after)",
    "max_workers": "threads for blocking handlers (0 = max_watchers + max_waiting_matches + unary_workers)",
    "max_concurrent_rpcs": (
        "RPCs in flight before RESOURCE_EXHAUSTED (0 = max_streams + max_workers + 3 x unary_workers)"
    ),
    "max_message_bytes": "largest request message accepted",
    "events_maxlen": "approximate length cap of each partition's event stream",
    "shutdown_grace": "seconds in-flight RPCs get to finish on SIGTERM",
    "lease_ttl": "seconds a lease lasts when Match/Renew give no lease_ttl",
    "max_lease_ttl": "longest lease_ttl a caller may ask for",
    "match_walk": "idle-queue entries one match script call examines before yielding",
    "max_waiting_matches": "Match calls with wait > 0 one process holds at once (each holds a thread)",
    "max_wait": "longest wait a Match may ask for",
    "queue_ttl": "seconds an enqueued job waits (and its assignment waits for its scheduler) by default",
    "max_queue_ttl": "longest ttl an Enqueue may ask for",
    "subcloud_cache_ttl": "seconds each process keeps subcloud policies (a Put is seen everywhere within it)",
    "job_ttl": "seconds a job's record (its tried nodes, attempts) outlives its last change",
    "failure_half_life": "seconds in which a node's failure score halves",
    "cooldown_score": "failure score at which a node gets a COOLDOWN flag",
    "cooldown_ttl": "seconds a COOLDOWN lasts",
    "quarantine_score": "failure score at which a node gets a QUARANTINE flag",
    "quarantine_ttl": "seconds a QUARANTINE lasts",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "log_format": "text or json (one JSON object a line)",
    "metrics_listen": "HOST:PORT serving Prometheus metrics at /metrics (off when unset)",
    "gc_interval": "seconds between young garbage collections, paced on the event loop (0 = CPython's own)",
    "auth_file": "JSON file of bearer tokens (hashed) and their roles; see README",
    "auth_tokens": "the same JSON inline (takes precedence over auth_file)",
    "tls_cert": "server certificate (PEM) for TLS",
    "tls_key": "server private key (PEM) for TLS",
    "tls_ca": "CA (PEM) that client certificates must chain to: mutual TLS",
    "insecure": "allow a non-loopback listen address without auth and TLS (logged loudly)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, field in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = _kind(field)
        help_text = f"{_HELP[name]} (env {ENV_PREFIX}{name.upper()})"
        if kind is bool:
            parser.add_argument(
                flag, dest=name, action="store_const", const=True, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def from_sources(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, field in _FIELDS.items():
        raw_flag = getattr(args, name, None) if args is not None else None
        if raw_flag is not None:
            values[name] = raw_flag
            continue
        raw_env = environ.get(ENV_PREFIX + name.upper())
        if raw_env not in (None, ""):
            try:
                values[name] = _parse_bool(raw_env) if _kind(field) is bool else _kind(field)(raw_env)
            except ValueError as exc:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw_env!r}: {exc}") from exc
    try:
        return Config(**values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def parse(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_sources(parser.parse_args(argv), {})


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _kind(field: dataclasses.Field[object]) -> type:
    default = field.default
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str
