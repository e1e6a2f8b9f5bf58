"""Load for fault tests: node agents, Match schedulers and queue schedulers driving a real server
through the generated stubs, recording every call into a History.

Everything is bounded (counts, deadlines, retry budgets), stoppable, loopback only, and joins its
threads on stop().
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from harness import Harness, wait_for
from livestate.v1 import (
    heartbeat_service_pb2,
    heartbeat_service_pb2_grpc,
    match_service_pb2,
    match_service_pb2_grpc,
    node_pb2,
    node_service_pb2,
    queue_service_pb2,
    queue_service_pb2_grpc,
)

from .history import (
    ASSIGNMENT,
    BEAT,
    CANCEL,
    ENQUEUE,
    FAIL,
    MATCH,
    OK,
    QUEUE_LOST,
    REGISTER,
    RELEASE,
    RENEW,
    History,
    LeaseRef,
    Op,
)

RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"})
ENV = "test"
REGION = "eu-west"
MODEL = "llama-3-8b"


@dataclasses.dataclass
class Reply:
    outcome: str  # OK or a status code name
    op: Op
    response: Any = None
    error: grpc.RpcError | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def recorded(
    history: History,
    kind: str,
    process: str,
    method: Callable[..., Any],
    request: Any,
    *,
    timeout: float,
    job_id: str = "",
    lease: LeaseRef | None = None,
    result: Callable[[Any], LeaseRef | None] = lambda _: None,
    **detail: Any,
) -> Reply:
    """One unary call, recorded as an invoke and its completion."""
    op = history.invoke(kind, process, job_id=job_id, lease=lease, deadline=timeout, **detail)
    try:
        response = method(request, timeout=timeout)
    except grpc.RpcError as err:
        code = err.code()
        history.error(op, code)
        return Reply(code.name, op, error=err)
    history.ok(op, result(response))
    return Reply(OK, op, response)


def error_info(err: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata of a failed call ("" and {} without one)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason), dict(info.metadata)
    return "", {}


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(value * 1000))
    return d


class LeaseTable:
    """The leases schedulers hold right now, per node: what agents report as running_jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, LeaseRef] = {}

    def add(self, lease: LeaseRef) -> None:
        with self._lock:
            self._held[lease.lease_id] = lease

    def remove(self, lease_id: str) -> None:
        with self._lock:
            self._held.pop(lease_id, None)

    def running(self, node_id: str) -> int:
        with self._lock:
            return sum(1 for lease in self._held.values() if lease.node_id == node_id)

    def held(self) -> list[LeaseRef]:
        with self._lock:
            return list(self._held.values())


class _Stoppable:
    """Threads that run until stop() (or their own bound) and are joined by it."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def _spawn(self, target: Callable[..., None], *args: Any, name: str = "") -> None:
        thread = threading.Thread(target=target, args=args, name=name or None, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"threads did not stop within {timeout}s: {alive}"


# -- node agents -------------------------------------------------------------------------------


class Agents(_Stoppable):
    """`count` node agents beating with unary Beat every `interval`. One ticker thread spreads the
    beats over the interval and sends each asynchronously (`Beat.future`): answers are handled on
    gRPC's own callback thread, so no agent has a thread and a slow server delays no other agent.
    An agent whose last beat is still in flight skips its turn. A beat answered resync_required
    re-registers with the same boot_id."""

    def __init__(
        self,
        target: str,
        history: History,
        count: int,
        *,
        interval: float,
        table: LeaseTable | None = None,
        deadline: float | None = None,
        prefix: str = "agent",
        slots: int = 1,
        **spec: Any,
    ) -> None:
        super().__init__()
        self.history = history
        self.interval = interval
        self.table = table or LeaseTable()
        self.deadline = deadline or interval
        self.channel = grpc.insecure_channel(target)
        self.stub = heartbeat_service_pb2_grpc.HeartbeatServiceStub(self.channel)
        fields: dict[str, Any] = {"env": ENV, "region": REGION, "models": [MODEL], "vram_total_mb": 24_000}
        fields.update(spec)
        self.specs = {
            f"{prefix}-{i}": node_pb2.NodeSpec(node_id=f"{prefix}-{i}", slots=slots, **fields)
            for i in range(count)
        }
        self.node_ids = list(self.specs)
        self.boots = {node_id: uuid.uuid4().hex for node_id in self.node_ids}
        self.resyncs: dict[str, list[float]] = {node_id: [] for node_id in self.node_ids}
        self.outcomes: Counter[str] = Counter()  # beat outcomes (RESYNC for resync_required)
        self.callback_errors: list[BaseException] = []
        self._seq = dict.fromkeys(self.node_ids, 0)
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        for node_id in self.node_ids:
            history.slots[node_id] = slots

    def start(self) -> Agents:
        """Registers every agent (retrying briefly), then beats until stop()."""
        until = time.monotonic() + 15
        todo = list(self.node_ids)
        while todo and time.monotonic() < until:
            replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
            for node_id in todo:
                self._register(node_id, replies.put)
            todo = sorted(reply.op.process for reply in [replies.get() for _ in todo] if not reply.ok)
        assert not todo, f"{len(todo)} agents could not register, e.g. {todo[:5]}"
        self._spawn(self._tick, name="agents-ticker")
        return self

    def _register(self, node_id: str, then: Callable[[Reply], None]) -> None:
        request = heartbeat_service_pb2.RegisterRequest(
            node=self.specs[node_id],
            boot_id=self.boots[node_id],
            state=node_pb2.NODE_STATE_IDLE,
            running_jobs=self.table.running(node_id),  # after a state loss, these slots stay taken
        )
        self._send(REGISTER, node_id, self.stub.Register, request, then)

    def _send(
        self, kind: str, node_id: str, method: Any, request: Any, then: Callable[[Reply], None]
    ) -> None:
        op = self.history.invoke(kind, node_id, deadline=self.deadline)

        def finish(future: grpc.Future[Any]) -> None:
            try:
                try:
                    response = future.result()
                except grpc.RpcError as err:
                    self.history.error(op, err.code())
                    reply = Reply(err.code().name, op, error=err)
                else:
                    self.history.ok(op)
                    reply = Reply(OK, op, response)
                then(reply)
            except BaseException as exc:  # surfaced by stop(): a callback must not die silently
                self.callback_errors.append(exc)

        method.future(request, timeout=self.deadline).add_done_callback(finish)

    def _tick(self) -> None:
        step = self.interval / len(self.node_ids)
        due = time.monotonic()
        i = 0
        while not self.stopping.wait(max(0.0, due - time.monotonic())):
            now = time.monotonic()
            while due <= now:  # catch up in a burst when the ticker fell behind
                self._beat(self.node_ids[i])
                i = (i + 1) % len(self.node_ids)
                due += step

    def _beat(self, node_id: str) -> None:
        with self._lock:
            if node_id in self._busy:
                return
            self._busy.add(node_id)
        self._seq[node_id] += 1
        request = heartbeat_service_pb2.BeatRequest(
            node_id=node_id,
            boot_id=self.boots[node_id],
            seq=self._seq[node_id],
            state=node_pb2.NODE_STATE_IDLE,
            running_jobs=self.table.running(node_id),
        )
        self._send(BEAT, node_id, self.stub.Beat, request, self._beaten)

    def _beaten(self, reply: Reply) -> None:
        node_id = reply.op.process
        resync = reply.ok and reply.response.resync_required
        self.outcomes["RESYNC" if resync else reply.outcome] += 1
        if not resync:
            self._idle(node_id)
            return
        reply.op.detail["resync_required"] = True
        self.resyncs[node_id].append(time.monotonic())
        # A failed registration just means the next beat asks again.
        self._register(node_id, lambda _: self._idle(node_id))

    def _idle(self, node_id: str) -> None:
        with self._lock:
            self._busy.discard(node_id)

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        # Let the calls in flight finish (each is bounded by its deadline) before closing.
        deadline = time.monotonic() + 2 * self.deadline + 1
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.01)
        self.channel.close()
        assert not self.callback_errors, f"agent callbacks raised: {self.callback_errors[:3]}"

    def __enter__(self) -> Agents:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Match schedulers --------------------------------------------------------------------------


class Schedulers(_Stoppable):
    """`count` threads, each looping: Match a new job (retrying the same job_id on UNAVAILABLE,
    DEADLINE_EXCEEDED, ABORTED or NOT_FOUND), hold the lease a short random time, sometimes Renew,
    then Release (or sometimes Fail), retrying until the answer is definite."""

    def __init__(
        self,
        target: str,
        history: History,
        count: int,
        *,
        table: LeaseTable | None = None,
        deadline: float = 0.5,
        hold: tuple[float, float] = (0.02, 0.2),
        renew_chance: float = 0.3,
        fail_chance: float = 0.0,
        lease_ttl: float | None = None,
        max_jobs: int = 100_000,
        prefix: str = "sched",
        seed: int = 0,
        **match: Any,
    ) -> None:
        super().__init__()
        self.history = history
        self.table = table or LeaseTable()
        self.deadline = deadline
        self.hold = hold
        self.renew_chance = renew_chance
        self.fail_chance = fail_chance
        self.max_jobs = max_jobs
        self.match_fields: dict[str, Any] = {"env": ENV, "model": MODEL}
        self.match_fields.update(match)
        if lease_ttl:
            self.match_fields["lease_ttl"] = seconds(lease_ttl)
        self.channel = grpc.insecure_channel(target)
        self.stub = match_service_pb2_grpc.MatchServiceStub(self.channel)
        self.names = [f"{prefix}-{i}" for i in range(count)]
        self._seed = seed
        self._granted = Counter[str]()

    def start(self) -> Schedulers:
        for i, name in enumerate(self.names):
            self._spawn(self._run, name, random.Random(self._seed + i), name=name)
        return self

    def _run(self, name: str, rng: random.Random) -> None:
        for n in range(self.max_jobs):
            if self.stopping.is_set():
                return
            lease = self.match(name, f"{name}-job-{n}")
            if lease is not None:
                self._granted[name] += 1
                self.table.add(lease)
                try:
                    self._work(name, lease, rng)
                finally:
                    self.table.remove(lease.lease_id)

    @property
    def granted(self) -> int:
        return sum(self._granted.values())

    def grant_more(self, count: int, timeout: float) -> None:
        """Waits until `count` more leases than now were granted: the load is flowing."""
        before = self.granted
        wait_for(lambda: self.granted >= before + count, timeout=timeout, interval=0.05)

    def match(self, name: str, job_id: str, give_up: float | None = None) -> LeaseRef | None:
        """Matches `job_id`, retrying the same job_id until a lease, a definite refusal, stop()
        or `give_up` seconds."""
        request = match_service_pb2.MatchRequest(job_id=job_id, **self.match_fields)
        until = None if give_up is None else time.monotonic() + give_up
        while not self.stopping.is_set() and (until is None or time.monotonic() < until):
            reply = recorded(
                self.history,
                MATCH,
                name,
                self.stub.Match,
                request,
                timeout=self.deadline,
                job_id=job_id,
                result=lambda r: self.history.lease(r.lease),
            )
            if reply.ok:
                return self.history.lease(reply.response.lease)
            if reply.outcome not in RETRYABLE and reply.outcome != "NOT_FOUND":
                return None
            self.stopping.wait(0.02 if reply.outcome == "NOT_FOUND" else 0.05)
        return None

    def _work(self, name: str, lease: LeaseRef, rng: random.Random) -> None:
        self.stopping.wait(rng.uniform(*self.hold))
        if rng.random() < self.renew_chance:
            reply = self.renew(name, lease)
            if reply.outcome in ("NOT_FOUND", "FAILED_PRECONDITION"):
                return  # lost: nothing to release
            self.stopping.wait(rng.uniform(*self.hold))
        self.end(name, lease, fail=rng.random() < self.fail_chance)

    def renew(self, name: str, lease: LeaseRef) -> Reply:
        request = match_service_pb2.RenewRequest(lease_id=lease.lease_id, fencing_token=lease.token)
        return recorded(
            self.history,
            RENEW,
            name,
            self.stub.Renew,
            request,
            timeout=self.deadline,
            lease=lease,
            result=lambda r: self.history.lease(r.lease),
        )

    def end(self, name: str, lease: LeaseRef, *, fail: bool = False, budget: float = 15.0) -> Reply:
        """Release (or Fail) until the answer is definite: OK, NOT_FOUND (already gone), or a
        refusal. Runs on after stop() (within `budget`), so no lease is left behind."""
        return end_lease(
            self.history, self.stub, name, lease, fail=fail, deadline=self.deadline, budget=budget
        )

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        self.channel.close()

    def __enter__(self) -> Schedulers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def end_lease(
    history: History,
    stub: match_service_pb2_grpc.MatchServiceStub,
    process: str,
    lease: LeaseRef,
    *,
    fail: bool = False,
    deadline: float = 0.5,
    budget: float = 15.0,
) -> Reply:
    until = time.monotonic() + budget
    while True:
        if fail:
            request: Any = match_service_pb2.FailRequest(
                lease_id=lease.lease_id, fencing_token=lease.token, reason="x"
            )
            method = stub.Fail
        else:
            request = match_service_pb2.ReleaseRequest(lease_id=lease.lease_id, fencing_token=lease.token)
            method = stub.Release
        reply = recorded(
            history, FAIL if fail else RELEASE, process, method, request, timeout=deadline, lease=lease
        )
        if reply.outcome not in RETRYABLE or time.monotonic() > until:
            return reply
        time.sleep(0.05)


# -- queue schedulers --------------------------------------------------------------------------


class QueueScheduler(_Stoppable):
    """One scheduler on the queue path: Enqueue jobs and read its Assignments stream on a thread,
    taking each assignment up (a short hold, then Release). When its stream ends ABORTED with
    reason QUEUE_LOST (or an Enqueue answers queue_lost) it records the notice, adopts the new
    epoch and, with `requeue_lost`, enqueues its lost jobs again."""

    def __init__(
        self,
        target: str,
        history: History,
        scheduler_id: str,
        *,
        table: LeaseTable | None = None,
        ttl: float = 60.0,
        hold: tuple[float, float] = (0.01, 0.05),
        deadline: float = 0.5,
        requeue_lost: bool = False,
        **job: Any,
    ) -> None:
        super().__init__()
        self.history = history
        self.scheduler_id = scheduler_id
        self.table = table or LeaseTable()
        self.ttl = ttl
        self.hold = hold
        self.deadline = deadline
        self.requeue_lost = requeue_lost
        self.job_fields: dict[str, Any] = {"env": ENV, "model": MODEL}
        self.job_fields.update(job)
        self.channel = grpc.insecure_channel(target)
        self.stub = queue_service_pb2_grpc.QueueServiceStub(self.channel)
        self.match_stub = match_service_pb2_grpc.MatchServiceStub(self.channel)
        self.known_epoch = 0
        self.losses: list[tuple[float, int, str]] = []  # (when, new epoch, how we were told)
        self.waiting: set[str] = set()  # enqueued, not yet assigned, cancelled or lost
        self.assigned: dict[str, list[str]] = {}  # job_id -> lease ids received
        self.stream_errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._call: Any = None
        self._rng = random.Random(scheduler_id)

    def start(self) -> QueueScheduler:
        self._spawn(self._consume, name=f"{self.scheduler_id}-assignments")
        return self

    # -- calls --

    def enqueue(self, job_id: str, *, budget: float = 10.0, **fields: Any) -> Reply:
        """Enqueue (retried on UNAVAILABLE and the like within `budget`)."""
        values = {**self.job_fields, **fields}
        until = time.monotonic() + budget
        while True:
            request = queue_service_pb2.EnqueueRequest(
                job_id=job_id,
                scheduler_id=self.scheduler_id,
                ttl=seconds(self.ttl),
                known_epoch=self.known_epoch,
                **values,
            )
            reply = recorded(
                self.history,
                ENQUEUE,
                self.scheduler_id,
                self.stub.Enqueue,
                request,
                timeout=self.deadline,
                job_id=job_id,
                ttl=self.ttl,
            )
            if reply.ok:
                if reply.response.queue_lost:
                    # Told before this job went in: the loss is dated at this call's invoke.
                    self._lost(int(reply.response.epoch), "enqueue", at=reply.op.invoke)
                self.known_epoch = max(self.known_epoch, int(reply.response.epoch))
                with self._lock:
                    if job_id not in self.assigned:
                        self.waiting.add(job_id)
            if reply.outcome not in RETRYABLE or time.monotonic() > until:
                return reply
            time.sleep(0.05)

    def cancel(self, job_id: str) -> Reply:
        reply = recorded(
            self.history,
            CANCEL,
            self.scheduler_id,
            self.stub.Cancel,
            queue_service_pb2.CancelRequest(job_id=job_id),
            timeout=self.deadline,
            job_id=job_id,
        )
        if reply.ok or reply.outcome == "NOT_FOUND":
            with self._lock:
                self.waiting.discard(job_id)
        return reply

    def settle(self, timeout: float = 10.0) -> set[str]:
        """Ends every job still waiting: Cancel it, or, when it turns out to be assigned, wait
        for the assignment. Returns the jobs still unsettled after `timeout`."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            with self._lock:
                pending = sorted(self.waiting)
            if not pending:
                break
            for job_id in pending:
                self.cancel(job_id)  # FAILED_PRECONDITION: assigned, its assignment is on its way
            time.sleep(0.1)
        with self._lock:
            return set(self.waiting)

    # -- the Assignments stream --

    def _consume(self) -> None:
        while not self.stopping.is_set():
            request = queue_service_pb2.AssignmentsRequest(
                scheduler_id=self.scheduler_id, known_epoch=self.known_epoch
            )
            with self._lock:
                self._call = self.stub.Assignments(request)
                call = self._call
            if self.stopping.is_set():
                call.cancel()
            try:
                for item in call:
                    self._assigned(item)
                self.stream_errors["ENDED"] += 1
            except grpc.RpcError as err:
                code = err.code()
                reason, metadata = error_info(err)
                self.stream_errors[reason or code.name] += 1
                if code == grpc.StatusCode.ABORTED and reason == "QUEUE_LOST":
                    self._lost(int(metadata.get("epoch", "0") or 0), "assignments")
                    continue
            self.stopping.wait(0.1)

    def _assigned(self, item: queue_service_pb2.AssignmentsResponse) -> None:
        lease = self.history.lease(item.lease)
        self.history.event(ASSIGNMENT, self.scheduler_id, job_id=item.job_id, result=lease)
        with self._lock:
            self.waiting.discard(item.job_id)
            seen = self.assigned.setdefault(item.job_id, [])
            if lease.lease_id in seen:
                return  # a replay of one we already took up
            seen.append(lease.lease_id)
        self.table.add(lease)
        try:
            time.sleep(self._rng.uniform(*self.hold))
            end_lease(self.history, self.match_stub, self.scheduler_id, lease, deadline=self.deadline)
        finally:
            self.table.remove(lease.lease_id)

    def _lost(self, epoch: int, how: str, at: float | None = None) -> None:
        with self._lock:
            lost = sorted(self.waiting)
            self.waiting.clear()
        self.known_epoch = max(self.known_epoch, epoch)
        notice = self.history.event(QUEUE_LOST, self.scheduler_id, epoch=epoch, how=how, jobs=lost, at=at)
        self.losses.append((notice.invoke, epoch, how))
        if self.requeue_lost:
            for job_id in lost:
                self.enqueue(job_id)

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        super().stop(timeout)
        self.channel.close()

    def __enter__(self) -> QueueScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def target(ls: Harness) -> str:
    return f"127.0.0.1:{ls.port}"


def nodes_with(ls: Harness, liveness: node_pb2.Liveness) -> set[str]:
    """Every node of the test env with that liveness, per ListNodes."""
    found: set[str] = set()
    token = ""
    while True:
        request = node_service_pb2.ListNodesRequest(
            env=ENV, liveness=liveness, page_size=1000, page_token=token
        )
        response = ls.nodes.ListNodes(request, timeout=2)
        found.update(node.spec.node_id for node in response.nodes)
        token = response.next_page_token
        if not token:
            return found


def steady_load(
    stack: contextlib.ExitStack,
    ls: Harness,
    history: History,
    table: LeaseTable,
    *,
    agents: int,
    interval: float,
) -> tuple[Agents, Schedulers]:
    """`agents` agents beating every `interval` and 6 schedulers matching (1 s deadlines, 10 s
    leases), entered on `stack`; returned once every agent is ONLINE and 50 jobs were granted."""
    beating = stack.enter_context(Agents(target(ls), history, agents, interval=interval, table=table))
    wait_for(lambda: len(nodes_with(ls, node_pb2.LIVENESS_ONLINE)) == agents, timeout=10)
    matching = stack.enter_context(
        Schedulers(target(ls), history, 6, table=table, deadline=1.0, hold=(0.01, 0.05), lease_ttl=10.0)
    )
    wait_for(lambda: matching.granted >= 50, timeout=10)
    return beating, matching


def probe_match(ls: Harness, history: History, table: LeaseTable, job_id: str, *, within: float) -> float:
    """Polls a fresh Match (1 s deadlines) until one is granted within `within` seconds, then
    releases it; returns when it was granted."""
    probe = Schedulers(target(ls), history, 1, table=table, prefix="probe", deadline=1.0)
    try:
        lease = wait_for(lambda: probe.match("probe", job_id, give_up=1.0), timeout=within, interval=0.05)
        granted = time.monotonic()
        assert lease is not None
        assert probe.end("probe", lease).outcome == OK
        return granted
    finally:
        probe.stop()


# A WAIT long enough to outlast a short freeze of the replicas; beats slow enough that no node
# turns SUSPECT while its writes wait.
WAITING: dict[str, float] = {
    "redis_timeout": 3.0,
    "ack_timeout": 2.0,
    "heartbeat_interval": 2.0,
    "suspect_after": 30.0,
    "offline_after": 60.0,
}
