"""`livestate dispatch`: jobs from RabbitMQ, placed on nodes through livestate, acknowledged to the
broker only once a node has them.

Flow. Jobs wait in durable queues named `livestate.jobs.<env>.<model>.p<priority>`, one JSON
message each (JOB FORMAT below). The dispatcher consumes them (at most `prefetch` unacked at
once: backpressure), enqueues each in livestate (QueueService.Enqueue, scheduler_id = the
dispatcher's id, the queue's priority), and reads its Assignments stream. When a node takes a
job, the dispatcher publishes the assignment (LEASE FORMAT) to the node's queue
`livestate.node.<node_id>` and to the job's `reply_to`, waits for the broker to confirm both, takes
the job's message, and takes the assignment up in livestate (a Renew, so it is not replayed). A
crash anywhere before the ack leaves the message with the broker, which delivers it again, to this
dispatcher or another: nothing is lost. The job_id makes the copy safe: while the job's lease
lives, livestate answers a repeated Enqueue with that same lease (same fencing token). Only a
crash in the instant between the broker confirming the lease and the ack, with the node already
done and its lease released by the time the copy comes, gives the job a second lease: so a node
drops a job_id it has already run (the lease message names it).

Failures. A message that is not a job goes to `livestate.jobs.<env>.dead` at once, with the reason in
the `x-livestate-reason` header; it never blocks its queue. A job livestate refuses (an invalid
field, a job_id reused for another job) is dead-lettered with livestate's reason. A job livestate
cannot take now (it is unavailable, or no node has registered in the env yet, as after a wipe)
stays held and is tried again with a backoff, for as long as its ttl lasts. A job whose ttl passes
before a node takes it is cancelled in livestate and dead-lettered ("ttl expired"). A message the
broker has delivered `max_attempts` times (a dispatcher died on it each time) is dead-lettered;
RabbitMQ counts deliveries (`x-delivery-count`) on quorum queues only, so declare the job queues
as quorum queues for that guard (the dispatcher declares classic durable ones when none exist).
When livestate reports its queue lost (Redis lost its state), every job the dispatcher holds
unacked is enqueued again. When the broker connection drops, the dispatcher connects again; the
messages it held come back from the broker, and it hands each the assignment it already has (or
acks at once one it had delivered but whose ack was lost with the connection).

JOB FORMAT (JSON object): job_id (required, the idempotency key), model (default: the queue's),
regions, min_vram_mb, gpu_models, subcloud, labels, exclude_node_ids, ttl_s (default 300), and
anything else under "payload", passed through untouched. AMQP properties: reply_to,
correlation_id.

LEASE FORMAT (JSON object, to the node's queue and to reply_to): job_id, node_id, lease_id,
fencing_token, expire_ms, and the job message as "job". The node runs the job and then Releases
(or Fails) the lease with that lease_id and fencing_token.

pika (pure Python, no dependencies, the RabbitMQ team's own client) serves the broker: every
broker call happens on the dispatcher's one thread; the Assignments stream is read on a second
thread and handed over through a queue.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from livestate.client.scheduler import QueueLost, Scheduler
from livestate.v1 import queue_service_pb2 as qpb

log = logging.getLogger(__name__)

DELIVERY_COUNT = "x-delivery-count"
REASON = "x-livestate-reason"
# What livestate answers for a job that will never be placed as it is.
PERMANENT = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)
JOB_FIELDS = ("regions", "min_vram_mb", "gpu_models", "subcloud", "labels", "exclude_node_ids")


def job_queue(env: str, model: str, priority: int) -> str:
    return f"livestate.jobs.{env}.{model}.p{priority}"


def dead_queue(env: str) -> str:
    return f"livestate.jobs.{env}.dead"


def node_queue(node_id: str) -> str:
    return f"livestate.node.{node_id}"


class BadJob(ValueError):
    """A message that is not a job: dead-lettered with this reason."""


@dataclasses.dataclass
class Held:
    """A job's message, unacked until a node has the job."""

    job_id: str
    queue: str
    priority: int
    model: str
    body: dict[str, Any]
    raw: bytes
    tag: int
    reply_to: str | None
    correlation_id: str | None
    deadline: float  # monotonic
    retry_at: float = 0.0  # monotonic; 0 = enqueued (or being enqueued)
    backoff: float = 0.25


def _delivery_count(headers: dict[str, Any]) -> int:
    try:
        return int(headers.get(DELIVERY_COUNT, 0))
    except (TypeError, ValueError):
        return 0


def parse_job(raw: bytes, model: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadJob(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadJob("not a JSON object")
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise BadJob("job_id is missing or not a string")
    if body.setdefault("model", model) != model:
        raise BadJob(f"model {body['model']!r} is not this queue's model {model!r}")
    ttl = body.setdefault("ttl_s", 300)
    if not isinstance(ttl, int | float) or not 0 < ttl <= 86_400:
        raise BadJob("ttl_s must be a number of seconds in (0, 86400]")
    return body


class Dispatcher:
    def __init__(
        self,
        amqp_url: str,
        server: str | grpc.Channel,
        *,
        metadata: list[tuple[str, str]] | None = None,
        env: str,
        models: Sequence[str],
        priorities: Sequence[int] = (0,),
        dispatcher_id: str = "dispatch",
        prefetch: int = 100,
        max_attempts: int = 5,
        deliver: Callable[[Dispatcher, Held, qpb.AssignmentsResponse], None] | None = None,
    ) -> None:
        import pika  # an optional dependency: livestate[dispatch]

        self._pika = pika
        self.params = pika.URLParameters(amqp_url)
        self.env = env
        self.queues = {job_queue(env, m, p): (m, p) for m in models for p in sorted(priorities, reverse=True)}
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.scheduler = Scheduler(server, dispatcher_id, metadata=metadata)
        self.deliver = deliver or Dispatcher.publish_lease
        self.held: dict[str, Held] = {}
        self.waiting: dict[str, qpb.AssignmentsResponse] = {}  # assigned before its message came
        self.delivered: dict[str, int] = {}  # job_id -> fencing token delivered (replays dropped)
        self.counts = {"delivered": 0, "dead": 0, "requeued_after_loss": 0}
        self._assigned: queue.SimpleQueue[qpb.AssignmentsResponse | QueueLost] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.connection: Any = None
        self.channel: Any = None

    # -- set-up --------------------------------------------------------------------------------

    def connect(self) -> None:
        self.connection = self._pika.BlockingConnection(self.params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.basic_qos(prefetch_count=self.prefetch)
        self.channel.queue_declare(dead_queue(self.env), durable=True)
        for name in self.queues:
            self.channel.queue_declare(name, durable=True)

    def run(self) -> None:
        """Consumes until `stop` is set. A lost broker connection is reopened (after a backoff):
        the messages held then go back to their queues with the broker, so the held jobs are
        forgotten here and come again; a livestate outage is waited out call by call."""
        reader = threading.Thread(target=self._read_assignments, name="dispatch-assignments", daemon=True)
        reader.start()
        backoff = 0.5
        try:
            while not self.stop.is_set():
                try:
                    self.connect()
                    for name in self.queues:
                        self.channel.basic_consume(name, self._on_message)
                    backoff = 0.5
                    while not self.stop.is_set():
                        self.connection.process_data_events(time_limit=0.05)
                        self._drain_assignments()
                        self._retry_due()
                        self._expire()
                except self._pika.exceptions.AMQPError as exc:
                    log.warning("broker connection lost (%r); reconnecting in %.1fs", exc, backoff)
                    self.held.clear()
                    self.stop.wait(backoff)
                    backoff = min(10.0, backoff * 2)
                finally:
                    if self.connection is not None and self.connection.is_open:
                        self.connection.close()
        finally:
            self.stop.set()
            reader.join(timeout=5)
            self.scheduler.close()

    # -- jobs in -------------------------------------------------------------------------------

    def _on_message(self, channel: Any, method: Any, props: Any, raw: bytes) -> None:
        model, priority = self.queues[method.routing_key]
        attempts = _delivery_count(props.headers or {})
        try:
            body = parse_job(raw, model)
        except BadJob as bad:
            self._dead(method.routing_key, raw, props, str(bad), method.delivery_tag)
            return
        if attempts >= self.max_attempts:
            reason = f"delivered {attempts} times without being placed"
            self._dead(method.routing_key, raw, props, reason, method.delivery_tag)
            return
        held = Held(
            job_id=body["job_id"],
            queue=method.routing_key,
            priority=priority,
            model=model,
            body=body,
            raw=raw,
            tag=method.delivery_tag,
            reply_to=props.reply_to,
            correlation_id=props.correlation_id,
            deadline=time.monotonic() + float(body["ttl_s"]),
        )
        if held.job_id in self.held:  # the broker gave us a copy we already hold
            channel.basic_ack(method.delivery_tag)
            return
        if held.job_id in self.delivered:  # our ack was lost with a connection: a node has it
            channel.basic_ack(method.delivery_tag)
            return
        self.held[held.job_id] = held
        self._enqueue(held)
        early = self.waiting.pop(held.job_id, None)
        if early is not None:
            self._assignment(early)

    def _enqueue(self, held: Held) -> None:
        fields = {k: held.body[k] for k in JOB_FIELDS if k in held.body}
        try:
            self.scheduler.enqueue(
                held.job_id,
                env=self.env,
                model=held.model,
                priority=held.priority,
                ttl=float(held.body["ttl_s"]),
                **fields,
            )
        except QueueLost:
            self._requeue_all()  # this job is in; the ones enqueued before the loss are not
            return
        except (ValueError, TypeError) as bad:  # a field of the wrong type for the request
            self._give_up(held, f"bad job field: {bad}")
            return
        except grpc.RpcError as err:
            if err.code() in PERMANENT:
                self._give_up(held, f"livestate refused it: {err.code().name}: {err.details()}")
                return
            # Unavailable, or no node in the env yet: it stays held (and with the broker) and is
            # tried again later, until its ttl ends.
            held.retry_at = time.monotonic() + held.backoff
            held.backoff = min(10.0, held.backoff * 2)
            log.info(
                "job %s not enqueued yet (%s); again in %.1fs", held.job_id, err.code().name, held.backoff
            )
            return
        held.retry_at = 0.0

    def _retry_due(self) -> None:
        now = time.monotonic()
        for held in [h for h in self.held.values() if 0 < h.retry_at <= now]:
            self._enqueue(held)

    # -- assignments out -----------------------------------------------------------------------

    def _read_assignments(self) -> None:
        for item in self.scheduler.assignments(self.stop, on_lost=self._assigned.put):
            self._assigned.put(item)

    def _drain_assignments(self) -> None:
        while True:
            try:
                item = self._assigned.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, QueueLost):
                self._requeue_all()
            else:
                self._assignment(item)

    def _assignment(self, a: qpb.AssignmentsResponse) -> None:
        token = int(a.lease.fencing_token)
        if self.delivered.get(a.job_id) == token:
            self._take_up(a)  # a replay of one already delivered
            return
        held = self.held.get(a.job_id)
        if held is None:  # its message has not reached us (again) yet
            self.waiting[a.job_id] = a
            return
        try:
            self.deliver(self, held, a)
            # Acked as soon as the broker holds the lease: the shorter the time between the two,
            # the rarer a copy after a crash (see the module's docstring).
            self.channel.basic_ack(held.tag)
        except self._pika.exceptions.AMQPError:
            # The connection went: the message comes again, and this stream will not replay the
            # assignment (it was sent once already), so it waits here for the message.
            self.waiting[a.job_id] = a
            raise
        del self.held[a.job_id]
        self.delivered[a.job_id] = token
        self.counts["delivered"] += 1
        self._take_up(a)

    def publish_lease(self, held: Held, a: qpb.AssignmentsResponse) -> None:
        """The default delivery: the lease to the node's queue and to the job's reply_to, each
        confirmed by the broker before this returns."""
        lease = {
            "job_id": a.job_id,
            "node_id": a.lease.node_id,
            "lease_id": a.lease.lease_id,
            "fencing_token": int(a.lease.fencing_token),
            "expire_ms": a.lease.expire_time.ToMilliseconds(),
            "job": held.body,
        }
        data = json.dumps(lease).encode()
        self.channel.queue_declare(node_queue(a.lease.node_id), durable=True)
        self._publish(node_queue(a.lease.node_id), data, None)
        if held.reply_to:  # the producer's own queue: not ours to require
            self._publish(held.reply_to, data, held.correlation_id, mandatory=False)

    def _take_up(self, a: qpb.AssignmentsResponse) -> None:
        # A Renew tells livestate the assignment reached its scheduler (no more replays). The
        # lease is the node's now: it Releases or Fails it when the job ends.
        try:
            self.scheduler.renew(a.lease)
        except grpc.RpcError as err:
            log.info("taking up %s: %s", a.job_id, err.code().name)

    # -- failure paths -------------------------------------------------------------------------

    def _publish(
        self,
        routing_key: str,
        data: bytes,
        correlation_id: str | None,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> None:
        props = self._pika.BasicProperties(
            delivery_mode=2, correlation_id=correlation_id, headers=headers, content_type="application/json"
        )
        self.channel.basic_publish("", routing_key, data, props, mandatory=mandatory)

    def _dead(self, source: str, raw: bytes, props: Any, reason: str, tag: int) -> None:
        log.warning("dead-lettering a message from %s: %s", source, reason)
        headers = {**(props.headers or {}), REASON: reason, "x-livestate-source": source}
        self._publish(dead_queue(self.env), raw, props.correlation_id, headers)
        self.channel.basic_ack(tag)
        self.counts["dead"] += 1

    def _give_up(self, held: Held, reason: str) -> None:
        self.held.pop(held.job_id, None)
        props = self._pika.BasicProperties(correlation_id=held.correlation_id)
        self._dead(held.queue, held.raw, props, reason, held.tag)

    def _expire(self) -> None:
        now = time.monotonic()
        for held in [h for h in self.held.values() if h.deadline <= now]:
            try:
                self.scheduler.cancel(held.job_id)
            except grpc.RpcError:
                continue  # livestate is not answering: try again on the next turn
            self._give_up(held, "ttl expired before a node took the job")

    def _requeue_all(self) -> None:
        """livestate lost its queue: enqueue every job still held again (their messages are
        still unacked, so nothing was lost)."""
        for held in list(self.held.values()):
            self.counts["requeued_after_loss"] += 1
            self._enqueue(held)
