"""`livestate dispatch` against a real RabbitMQ and a real livestate server: jobs from the
broker reach nodes exactly once, bad messages and expired jobs are dead-lettered with a reason.

The broker is the machine's (127.0.0.1:5672, guest/guest) when one answers; otherwise the tests
start Debian's rabbitmq-server on free ports; only where neither can be had do they skip. Each
test uses an env of its own, so its queues are its own, and deletes them at the end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from conftest import ServerFactory
from harness import Harness, wait_for
from livestate.client import Scheduler
from livestate.client.dispatch import DELIVERY_COUNT, REASON, Dispatcher, dead_queue, job_queue, node_queue
from livestate.server.store.embedded import EmbeddedRedis, free_ports
from livestate.v1 import lease_pb2

pika = pytest.importorskip("pika", reason="pika is not installed (pip install 'livestate[dispatch]')")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The machine's broker; or, when none answers (or LIVESTATE_TEST_AMQP=own), one started
    here from Debian's rabbitmq-server on free ports, in a directory of its own."""
    if _answers(5672) and os.environ.get("LIVESTATE_TEST_AMQP") != "own":
        yield "amqp://guest:guest@127.0.0.1:5672/%2F"
        return
    binary = shutil.which("rabbitmq-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        pytest.skip("no RabbitMQ answers on 127.0.0.1:5672 and rabbitmq-server is not installed")
    port, dist = free_ports(2)
    base = tempfile.mkdtemp(prefix="livestate-rabbit-")
    os.chmod(base, 0o777)  # Debian's script runs the broker as the rabbitmq user
    env = {
        **os.environ,
        "HOME": base,
        "RABBITMQ_NODENAME": f"livestate-test-{port}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_CRASH_DUMP": f"{base}/erl_crash.dump",
        **{
            f"RABBITMQ_{name}": f"{base}/{path}"
            for name, path in (
                ("MNESIA_BASE", "mnesia"),
                ("LOG_BASE", "log"),
                ("ENABLED_PLUGINS_FILE", "enabled_plugins"),
                ("FEATURE_FLAGS_FILE", "feature_flags"),
                ("PID_FILE", "pid"),
                ("PLUGINS_EXPAND_DIR", "plugins-expand"),
                ("CONFIG_FILE", "rabbitmq"),
                ("ADVANCED_CONFIG_FILE", "advanced.config"),
                ("GENERATED_CONFIG_DIR", "config"),
                ("SCHEMA_DIR", "schema"),
                ("QUORUM_DIR", "quorum"),
                ("STREAM_DIR", "stream"),
            )
        },
    }
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port) or proc.poll() is not None, timeout=60, interval=0.2)
        if proc.poll() is not None:
            pytest.skip(f"rabbitmq-server would not start here (exit {proc.returncode})")
        yield f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


class Broker:
    """A blocking connection for the test's own publishing and reading; deletes what it names."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.queues: set[str] = set()
        self.dead: list[tuple[Any, Any]] = []

    def declare(self, name: str) -> str:
        self.channel.queue_declare(name, durable=True)
        self.queues.add(name)
        return name

    def publish(self, queue: str, body: bytes | dict[str, Any], **props: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.channel.basic_publish("", self.declare(queue), data, pika.BasicProperties(**props))

    def take(self, queue: str) -> list[tuple[Any, Any]]:
        """Every message now in the queue (acked): (properties, the JSON body or the raw bytes)."""
        out: list[tuple[Any, Any]] = []
        self.declare(queue)
        while True:
            method, props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            try:
                out.append((props, json.loads(body)))
            except ValueError:
                out.append((props, body))

    def dead_letters(self, env: str) -> list[tuple[Any, Any]]:
        """Every dead letter of the env so far (reading drains the queue, so they are kept)."""
        self.dead += self.take(dead_queue(env))
        return self.dead

    def close(self) -> None:
        for name in self.queues:
            self.channel.queue_delete(name)
        self.connection.close()


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Broker]:
    made = Broker(amqp_url)
    yield made
    made.close()


@pytest.fixture
def env() -> str:
    return f"d{uuid.uuid4().hex[:8]}"


@pytest.fixture
def slow_beats(make_server: ServerFactory) -> Harness:
    """A server on which registered nodes stay ONLINE for the test without beating."""
    return make_server(heartbeat_interval=20.0, suspect_after=60.0, offline_after=120.0)


class Nodes:
    """What nodes do with their queues: note every lease that reaches them and, the first time
    a job_id comes, run the job (at once) and release its lease; a copy of a job already run is
    dropped (by job_id: see dispatch.py)."""

    def __init__(self, ls: Harness, broker: Broker, node_ids: list[str], *, releasing: bool = True) -> None:
        self.broker = broker
        self.node_ids = node_ids
        self.scheduler = Scheduler(f"127.0.0.1:{ls.port}", "node-side")
        self.releasing = releasing
        self.lost_ok = False  # a lease from before a Redis wipe is gone: its Release may fail
        self.tokens: dict[str, list[int]] = {}  # job_id -> the fencing token of each copy
        self.order: list[str] = []  # job_ids as they first reached a node
        self.leases: list[dict[str, Any]] = []

    def work(self) -> int:
        """Takes what is in the node queues now; returns how many jobs have reached a node."""
        for node in self.node_ids:
            for _, lease in self.broker.take(node_queue(node)):
                assert lease["node_id"] == node
                self.leases.append(lease)
                first = lease["job_id"] not in self.tokens
                self.tokens.setdefault(lease["job_id"], []).append(lease["fencing_token"])
                if first:
                    self.order.append(lease["job_id"])
                    if self.releasing:
                        self._release(lease)
        return len(self.tokens)

    def _release(self, lease: dict[str, Any]) -> None:
        try:
            self.scheduler.release(
                lease_pb2.Lease(lease_id=lease["lease_id"], fencing_token=lease["fencing_token"])
            )
        except grpc.RpcError:
            if not self.lost_ok:
                raise

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.scheduler.close()


class Running:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.thread = threading.Thread(target=dispatcher.run, daemon=True)

    def __enter__(self) -> Dispatcher:
        self.thread.start()
        return self.dispatcher

    def __exit__(self, *exc: object) -> None:
        self.dispatcher.stop.set()
        self.thread.join(timeout=15)


def _dispatcher(
    amqp_url: str, ls: Harness, env: str, models: list[str], broker: Broker, **kw: Any
) -> Dispatcher:
    d = Dispatcher(
        amqp_url, f"127.0.0.1:{ls.port}", env=env, models=models, dispatcher_id=f"disp-{env}", **kw
    )
    for name in d.queues:
        broker.queues.add(name)
    broker.queues.add(dead_queue(env))
    return d


def _nodes_and_jobs(
    ls: Harness, broker: Broker, env: str, nodes: int, jobs: int, job_name: str = "job-{}"
) -> tuple[list[str], list[str]]:
    """Registers `nodes` nodes for llama-3-8b in `env` and publishes `jobs` jobs for them."""
    node_ids = [f"{env}-n{i}" for i in range(nodes)]
    for node in node_ids:
        ls.register(node, env=env)
    job_ids = [job_name.format(i) for i in range(jobs)]
    for job_id in job_ids:
        broker.publish(job_queue(env, "llama-3-8b", 0), {"job_id": job_id})
    return node_ids, job_ids


def test_jobs_from_the_broker_reach_nodes_exactly_once(
    slow_beats: Harness, broker: Broker, amqp_url: str, env: str
) -> None:
    ls = slow_beats
    models = ["llama-3-8b", "mixtral-8x7b"]
    nodes = [f"{env}-n{i}" for i in range(6)]
    for i, node in enumerate(nodes):
        ls.register(node, env=env, models=[models[i % 2]])
    jobs = {f"job-{i}": models[i % 2] for i in range(40)}
    for i, (job_id, model) in enumerate(jobs.items()):
        broker.publish(job_queue(env, model, i % 2), {"job_id": job_id, "payload": {"prompt": f"p{i}"}})

    with (
        Nodes(ls, broker, nodes) as side,
        Running(_dispatcher(amqp_url, ls, env, models, broker, priorities=[0, 1])) as dispatcher,
    ):
        wait_for(lambda: side.work() == len(jobs), timeout=60, interval=0.1)
        assert dispatcher.counts["delivered"] == len(jobs)
    assert {job: len(tokens) for job, tokens in side.tokens.items()} == dict.fromkeys(jobs, 1)
    assert all(lease["job"]["payload"]["prompt"].startswith("p") for lease in side.leases)
    for model, p in ((m, p) for m in models for p in (0, 1)):
        assert broker.take(job_queue(env, model, p)) == []  # every message acked
    assert broker.take(dead_queue(env)) == []


def test_bad_messages_are_dead_lettered_with_a_reason_and_never_block_the_queue(
    slow_beats: Harness, broker: Broker, amqp_url: str, env: str
) -> None:
    ls = slow_beats
    ls.register(f"{env}-n0", env=env)
    q = job_queue(env, "llama-3-8b", 0)
    broker.publish(q, b"{not json")
    broker.publish(q, {"payload": "no job_id"})
    broker.publish(q, {"job_id": "job-wrong-model", "model": "other-model"})
    broker.publish(q, {"job_id": "job-bad-ttl", "ttl_s": -1})
    broker.publish(q, {"job_id": "job-good"})
    with Running(_dispatcher(amqp_url, ls, env, ["llama-3-8b"], broker)):
        leases = wait_for(lambda: broker.take(node_queue(f"{env}-n0")), timeout=20)
        wait_for(lambda: len(broker.dead_letters(env)) >= 4, timeout=20)
    dead = broker.dead_letters(env)
    assert [lease["job_id"] for _, lease in leases] == ["job-good"]
    reasons = sorted(props.headers[REASON] for props, _ in dead)
    assert any(r.startswith("not JSON") for r in reasons), reasons
    assert "job_id is missing or not a string" in reasons
    assert any("is not this queue's model" in r for r in reasons)
    assert any(r.startswith("ttl_s must be") for r in reasons)


def test_a_job_no_node_takes_within_its_ttl_is_cancelled_and_dead_lettered(
    slow_beats: Harness, broker: Broker, amqp_url: str, env: str
) -> None:
    ls = slow_beats
    ls.register(f"{env}-n0", env=env)  # serves llama-3-8b, not the job's model
    broker.publish(job_queue(env, "qwen-72b", 0), {"job_id": "job-late", "ttl_s": 1})
    started = time.monotonic()
    with Running(_dispatcher(amqp_url, ls, env, ["qwen-72b"], broker)) as dispatcher:
        dead = wait_for(lambda: broker.dead_letters(env), timeout=20)
        # The dispatcher counts a dead letter once the broker has it: the count may come a moment later.
        wait_for(lambda: dispatcher.counts["dead"] == 1, timeout=10)
    ((props, body),) = dead
    assert props.headers[REASON] == "ttl expired before a node took the job"
    assert body == {"job_id": "job-late", "ttl_s": 1}
    assert time.monotonic() - started >= 1
    assert DELIVERY_COUNT not in props.headers


def _dispatch_cli(amqp_url: str, ls: Harness, env: str, models: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "livestate.client.cli",
            "dispatch",
            "--server",
            f"127.0.0.1:{ls.port}",
            "--amqp-url",
            amqp_url,
            "--env",
            env,
            "--models",
            models,
            "--id",
            f"disp-{env}",
            "--prefetch",
            "10",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_dispatcher_killed_mid_run_loses_nothing_and_nodes_see_each_job_once(
    slow_beats: Harness, broker: Broker, amqp_url: str, env: str
) -> None:
    ls = slow_beats
    nodes, jobs = _nodes_and_jobs(ls, broker, env, nodes=3, jobs=24)
    broker.queues |= {job_queue(env, "llama-3-8b", 0), dead_queue(env)}

    with Nodes(ls, broker, nodes) as side:
        first = _dispatch_cli(amqp_url, ls, env, "llama-3-8b")
        try:
            wait_for(lambda: side.work() >= 8, timeout=30, interval=0.05)
        finally:
            first.kill()  # SIGKILL: whatever it held unacked goes back to the queue
            first.communicate(timeout=30)
        second = _dispatch_cli(amqp_url, ls, env, "llama-3-8b")
        try:
            wait_for(lambda: side.work() == len(jobs), timeout=60, interval=0.05)
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=30)
        assert second.returncode == 0, err
    assert sorted(side.tokens) == sorted(jobs)
    # Copies come only from what the killed dispatcher held unacked (at most its prefetch), and
    # a node drops a job_id it has already run.
    assert len(side.leases) - len(jobs) <= 10, side.tokens
    assert broker.take(job_queue(env, "llama-3-8b", 0)) == []
    assert broker.take(dead_queue(env)) == []
    counts = json.loads(err.strip().splitlines()[-1])
    assert counts["dead"] == 0


class CuttableLink:
    """A TCP relay to the broker whose connections the test can cut at once, as a network blip
    or a broker restart would; it keeps listening, so a client that connects again gets through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            doomed, self.open = self.open, []
            self.cuts += 1
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()
        self.cuts -= 1  # closing is not one of the test's cuts


def test_a_dropped_broker_connection_is_reopened_and_every_job_reaches_a_node_once(
    slow_beats: Harness, broker: Broker, amqp_url: str, env: str
) -> None:
    ls = slow_beats
    nodes, jobs = _nodes_and_jobs(ls, broker, env, nodes=8, jobs=200, job_name="job-{:03d}")
    link = CuttableLink(pika.URLParameters(amqp_url).port)
    via_link = f"amqp://guest:guest@127.0.0.1:{link.port}/%2F"

    try:
        with (
            Nodes(ls, broker, nodes) as side,
            Running(_dispatcher(via_link, ls, env, ["llama-3-8b"], broker, prefetch=20)) as dispatcher,
        ):
            for reached in (40, 100, 160):  # three cuts, each with jobs held and assignments in flight
                wait_for(lambda reached=reached: side.work() >= reached, timeout=60, interval=0.02)  # type: ignore[misc]
                link.cut()
            wait_for(lambda: side.work() == len(jobs), timeout=90, interval=0.05)
            delivered = dispatcher.counts["delivered"]
    finally:
        link.close()

    copies = len(side.leases) - len(jobs)
    print(f"dispatch, broker connection cut {link.cuts}x: {len(jobs)} jobs; {delivered=}; {copies=}")
    assert link.cuts >= 3
    assert sorted(side.tokens) == jobs
    # A copy reaches a node only when a lease was published but its confirm was lost with the
    # connection (then the node drops it by job_id, and it carries the same fencing token).
    assert all(len(set(tokens)) == 1 for tokens in side.tokens.values()), side.tokens
    assert delivered >= len(jobs)
    assert broker.take(job_queue(env, "llama-3-8b", 0)) == []
    assert broker.take(dead_queue(env)) == []


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


@pytest.mark.single_redis
@pytest.mark.parametrize(("node_count", "job_count"), [(2, 12), (50, 1000)])
def test_redis_killed_and_restarted_empty_mid_run_every_job_still_reaches_a_node(
    make_server: ServerFactory,
    own_redis: EmbeddedRedis,
    broker: Broker,
    amqp_url: str,
    env: str,
    node_count: int,
    job_count: int,
) -> None:
    ls = make_server(url=own_redis.url, heartbeat_interval=20.0, suspect_after=60.0, offline_after=120.0)
    nodes, jobs = _nodes_and_jobs(ls, broker, env, nodes=node_count, jobs=job_count)

    with (
        Nodes(ls, broker, nodes, releasing=False) as side,
        Running(_dispatcher(amqp_url, ls, env, ["llama-3-8b"], broker)) as dispatcher,
    ):
        # Every node busy (nobody releases yet), the rest of the held jobs waiting in livestate.
        wait_for(lambda: side.work() == node_count, timeout=20)
        wait_for(lambda: len(dispatcher.held) == min(job_count - node_count, 100), timeout=20)
        own_redis.kill()
        own_redis.start()  # empty: the jobs waiting in livestate are gone from it
        for node in nodes:  # the agents register again on their next beat
            wait_for(lambda node=node: _registered(ls, node, env), timeout=20)  # type: ignore[misc]
        side.releasing = side.lost_ok = True
        wait_for(lambda: side.work() == len(jobs), timeout=60, interval=0.1)
        assert dispatcher.counts["requeued_after_loss"] >= min(job_count - node_count, 100)
        counts = dict(dispatcher.counts)
    copies = len(side.leases) - len(jobs)
    print(
        f"dispatch, Redis killed and restarted empty: {len(jobs)} jobs, {node_count} nodes;",
        f"{counts}; {copies=}",
    )
    assert sorted(side.tokens) == sorted(jobs)
    assert broker.take(job_queue(env, "llama-3-8b", 0)) == []
    assert broker.take(dead_queue(env)) == []


def _registered(ls: Harness, node: str, env: str) -> bool:
    try:
        ls.register(node, env=env)
    except grpc.RpcError:
        return False
    return True


def test_a_thousand_jobs_over_three_models_and_two_priorities_to_fifty_nodes(
    slow_beats: Harness, broker: Broker, amqp_url: str, env: str
) -> None:
    ls = slow_beats
    models = ["llama-3-8b", "mixtral-8x7b", "qwen-72b"]
    nodes = [f"{env}-n{i:02d}" for i in range(50)]
    for i, node in enumerate(nodes):
        ls.register(node, env=env, models=[models[i % 3]])
    jobs = {f"job-{i:04d}": (models[i % 3], (i // 3) % 2) for i in range(1000)}
    for job_id, (model, priority) in jobs.items():
        broker.publish(job_queue(env, model, priority), {"job_id": job_id})

    with (
        Nodes(ls, broker, nodes) as side,
        Running(
            _dispatcher(amqp_url, ls, env, models, broker, priorities=[0, 1], prefetch=300)
        ) as dispatcher,
    ):
        started = time.monotonic()
        wait_for(lambda: side.work() == len(jobs), timeout=240, interval=0.05)
        took = time.monotonic() - started
        assert dispatcher.counts["delivered"] == len(jobs)
    print(f"dispatch: 1,000 jobs broker -> livestate -> nodes in {took:.1f}s ({len(jobs) / took:.0f} jobs/s)")
    assert {job: len(tokens) for job, tokens in side.tokens.items()} == dict.fromkeys(jobs, 1)
    # Nodes are scarce (50 for 1,000 jobs): among the jobs livestate held at once, the higher
    # priority went first, so priority-1 jobs sit earlier in the delivery order on the whole.
    rank = {job_id: i for i, job_id in enumerate(side.order)}
    mean = {p: sum(rank[j] for j, (_, q) in jobs.items() if q == p) / 500 for p in (0, 1)}
    assert mean[1] < mean[0], mean
    assert broker.take(dead_queue(env)) == []


def test_a_message_delivered_max_attempts_times_is_dead_lettered(
    slow_beats: Harness, broker: Broker, amqp_url: str, env: str
) -> None:
    # What a quorum queue says of a message dispatchers kept dying on (x-delivery-count).
    ls = slow_beats
    ls.register(f"{env}-n0", env=env)
    q = job_queue(env, "llama-3-8b", 0)
    broker.publish(q, {"job_id": "job-poison"}, headers={DELIVERY_COUNT: 5})
    broker.publish(q, {"job_id": "job-fine"}, headers={DELIVERY_COUNT: 1})
    with Running(_dispatcher(amqp_url, ls, env, ["llama-3-8b"], broker, max_attempts=5)):
        leases = wait_for(lambda: broker.take(node_queue(f"{env}-n0")), timeout=20)
        wait_for(lambda: broker.dead_letters(env), timeout=20)
    assert [lease["job_id"] for _, lease in leases] == ["job-fine"]
    ((props, body),) = broker.dead_letters(env)
    assert body == {"job_id": "job-poison"}
    assert props.headers[REASON] == "delivered 5 times without being placed"
