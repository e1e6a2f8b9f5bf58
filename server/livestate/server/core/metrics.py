"""Every Prometheus metric the server exports, in one place (the README's metrics table lists
them). Updating one is cheap and needs no server: the objects live in prometheus_client's
default registry, and `metrics_http.py` serves them when `--metrics-listen` is set.

With `--processes` > 1 the supervisor points PROMETHEUS_MULTIPROC_DIR at a directory before its
children start, so each child's values land in files there and the supervisor's /metrics sums
them. Gauges say how to combine: a count of open streams adds up across processes ("livesum");
a figure read from Redis is the same in every process and is taken from the freshest one
("mostrecent").
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

# Buckets from 0.5 ms to 10 s: Match and Beat answer in milliseconds, a waiting Match in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- RPCs (the names of go-grpc-prometheus, which dashboards already know) --------------------

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)

# -- streams and refusals ----------------------------------------------------------------------

STREAMS_OPEN = Gauge(
    "livestate_streams_open",
    "Long-lived streams open, by kind (agent streams; watchers: Watch and Assignments).",
    ["kind"],
    multiprocess_mode="livesum",
)
REFUSED = Counter(
    "livestate_refused_total",
    "Calls refused RESOURCE_EXHAUSTED, by reason (STREAM_BUDGET, IDENTITY_STREAMS, ...).",
    ["reason"],
)

# -- Redis -------------------------------------------------------------------------------------

REDIS_SECONDS = Histogram(
    "livestate_redis_roundtrip_seconds",
    "Redis round trips (a script call, a pipeline, a batch of the event loop), by path.",
    ["path"],
    buckets=LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter(
    "livestate_redis_errors_total",
    "Redis round trips that failed, by path and error class.",
    ["path", "error"],
)
BEAT_BATCH = Histogram(
    "livestate_beat_batch_size",
    "Calls the event loop's batcher sent to Redis in one write.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)

# -- background work ---------------------------------------------------------------------------

SWEEP_SECONDS = Histogram(
    "livestate_sweep_seconds",
    "Duration of one liveness sweep over every partition (the sweeping process only).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SWEEP_LAG = Gauge(
    "livestate_sweep_lag_seconds",
    "How late the last maintenance tick started against its interval.",
    multiprocess_mode="max",
)

# -- the fleet, read from Redis every few seconds (fleet_metrics.py) ---------------------------


def _fleet_gauge(name: str, documentation: str, labels: list[str]) -> Gauge:
    # Every process reads the same fleet: across --processes, the latest read is the answer.
    return Gauge(name, documentation, labels, multiprocess_mode="mostrecent")


BY_MODEL = ["env", "region", "model"]
NODES = _fleet_gauge(
    "livestate_nodes",
    "Nodes by region and liveness (ONLINE, SUSPECT, OFFLINE).",
    ["env", "region", "liveness"],
)
IDLE_NODES = _fleet_gauge("livestate_idle_nodes", "Nodes with a free slot, by region and model.", BY_MODEL)
QUEUE_DEPTH = _fleet_gauge("livestate_queue_depth", "Jobs waiting, by region and model.", BY_MODEL)
QUEUE_HEAD_WAIT = _fleet_gauge(
    "livestate_queue_head_wait_seconds",
    "How long the job first in line (the oldest of the highest priority) has waited, by region and model.",
    BY_MODEL,
)
FLAGS = _fleet_gauge("livestate_flags_in_force", "Flags in force, by kind.", ["kind"])
FLEET_READ_SECONDS = Histogram(
    "livestate_fleet_read_seconds",
    "Duration of the periodic read behind the fleet gauges.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class redis_timed:
    """Times one Redis round trip on `path` and counts it as an error when it raises."""

    __slots__ = ("_path", "_started")

    def __init__(self, path: str) -> None:
        self._path = path
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        REDIS_SECONDS.labels(self._path).observe(time.perf_counter() - self._started)
        if kind is not None:
            REDIS_ERRORS.labels(self._path, kind.__name__).inc()
