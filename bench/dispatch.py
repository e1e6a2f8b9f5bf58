"""Jobs end to end with the broker in the loop: published to RabbitMQ, taken by `livestate
dispatch`, placed by livestate, delivered to node queues, released by the nodes.

Nodes are registered in an env of the run's own; each node's consumer takes its lease messages as
they come (basic_consume) and releases the lease at once, so the figure is the system's rate, not
a job's run time. Reported: jobs/s over the run and each job's time from publish to its node's
receipt (p50/p99). Against the broker at --amqp-url; without one, the figure is skipped with the
reason.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from bench.stats import pct_ms
from livestate.client import Scheduler
from livestate.client.dispatch import Dispatcher, dead_queue, job_queue, node_queue
from livestate.v1 import heartbeat_service_pb2, lease_pb2, node_pb2

MODELS = ("llama-3-8b", "mixtral-8x7b", "qwen-72b")


def _broker_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=1):
            return True
    except OSError:
        return False


def run(
    port: int, amqp_url: str, jobs: int = 2000, nodes: int = 50, rate: float = 0.0, timeout: float = 300.0
) -> dict[str, Any]:
    """One run: `jobs` published at once (rate 0: a burst, for throughput) or spread at `rate`
    a second (for the time a job spends in the system when it is not queued behind a burst)."""
    if not _broker_answers(amqp_url):
        return {"skipped": f"no broker answers at {urlsplit(amqp_url).netloc.split('@')[-1]}"}
    import grpc
    import pika

    from livestate.v1 import heartbeat_service_pb2_grpc

    env = f"bench{uuid.uuid4().hex[:6]}"
    target = f"127.0.0.1:{port}"
    node_ids = [f"{env}-n{i:03d}" for i in range(nodes)]
    with grpc.insecure_channel(target) as channel:
        stub = heartbeat_service_pb2_grpc.HeartbeatServiceStub(channel)
        for i, node_id in enumerate(node_ids):
            spec = node_pb2.NodeSpec(
                node_id=node_id, env=env, region="eu-west", models=[MODELS[i % 3]], vram_total_mb=24_000
            )
            stub.Register(heartbeat_service_pb2.RegisterRequest(node=spec, boot_id="bench"), timeout=10)

    published: dict[str, float] = {}
    received: dict[str, float] = {}
    done = threading.Event()
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    queues = [job_queue(env, m, p) for m in MODELS for p in (0, 1)]
    for q in [*queues, dead_queue(env), *(node_queue(n) for n in node_ids)]:
        ch.queue_declare(q, durable=True)

    def nodes_side() -> None:
        consumer = pika.BlockingConnection(pika.URLParameters(amqp_url))
        cch = consumer.channel()
        releaser = Scheduler(target, f"{env}-nodes")

        def on_lease(c: Any, method: Any, props: Any, body: bytes) -> None:
            lease = json.loads(body)
            received.setdefault(lease["job_id"], time.monotonic())
            c.basic_ack(method.delivery_tag)
            releaser.release(
                lease_pb2.Lease(lease_id=lease["lease_id"], fencing_token=lease["fencing_token"])
            )
            if len(received) >= jobs:
                done.set()

        for n in node_ids:
            cch.basic_consume(node_queue(n), on_lease)
        while not done.is_set():
            consumer.process_data_events(time_limit=0.1)
        releaser.close()
        consumer.close()

    reader = threading.Thread(target=nodes_side, daemon=True)
    reader.start()
    dispatcher = Dispatcher(
        amqp_url, target, env=env, models=MODELS, priorities=(0, 1), dispatcher_id=f"{env}-d", prefetch=500
    )
    worker = threading.Thread(target=dispatcher.run, daemon=True)
    worker.start()
    started = time.monotonic()
    for i in range(jobs):
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                conn.sleep(delay)
        job_id = f"job-{i:05d}"
        published[job_id] = time.monotonic()
        ch.basic_publish("", queues[i % len(queues)], json.dumps({"job_id": job_id}).encode())
    finished = done.wait(timeout)
    took = time.monotonic() - started
    dispatcher.stop.set()
    worker.join(timeout=15)
    reader.join(timeout=15)
    for q in [*queues, dead_queue(env), *(node_queue(n) for n in node_ids)]:
        ch.queue_delete(q)
    conn.close()
    latencies = [received[j] - published[j] for j in received]
    return {
        "jobs": jobs,
        "rate": rate,
        "nodes": nodes,
        "delivered": len(received),
        "finished": finished,
        "seconds": took,
        "jobs_per_s": len(received) / took,
        "p50_ms": pct_ms(latencies, 0.50),
        "p99_ms": pct_ms(latencies, 0.99),
        "dead": dispatcher.counts["dead"],
    }
