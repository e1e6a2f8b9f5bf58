"""Redis killed, restarted, frozen and wiped under load. Every client call goes into the history,
which the `history` fixture checks when the test ends: no node over its slots, no job on two
leases, fencing tokens in order, every queued job ending exactly once, never INTERNAL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import pytest

from harness import OFFLINE, ONLINE, Harness, spec, wait_for
from livestate.client.agent import NodeAgent, Reading
from livestate.v1 import flag_pb2, flag_service_pb2, node_pb2, queue_service_pb2

from .conftest import FaultServerFactory
from .history import BEAT, MATCH, OK, RELEASE, RENEW, STATE_LOST, History, LeaseRef, Op
from .load import ENV, MODEL, Agents, LeaseTable, QueueScheduler, Schedulers, error_info, nodes_with, target
from .redisproc import RedisProc

OUTAGE_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def offline_events(ls: Harness) -> list[dict[str, str]]:
    return [e for e in ls.events() if e.get("type") == str(node_pb2.NODE_EVENT_TYPE_OFFLINE)]


def late(ops: list[Op], slack: float = 0.1) -> list[str]:
    """Calls that took longer than their deadline plus `slack`."""
    return [str(op) for op in ops if op.deadline is not None and (op.duration or 0.0) > op.deadline + slack]


def eventually(condition: Callable[[], object], timeout: float, message: Callable[[], str]) -> None:
    """wait_for, failing with `message()` (evaluated then) rather than a bare timeout."""
    try:
        wait_for(condition, timeout=timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(message()) from None


def outcomes(ops: list[Op]) -> dict[str, int]:
    return dict(Counter(f"{op.kind}:{op.outcome}" for op in ops))


class OfflinePoller:
    """Polls ListNodes(liveness=OFFLINE) on a thread and remembers every node it ever saw there."""

    def __init__(self, ls: Harness, every: float) -> None:
        self.ls = ls
        self.every = every
        self.seen: dict[str, float] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                offline = nodes_with(self.ls, OFFLINE)
            except grpc.RpcError:
                continue  # Redis is down: nothing to see
            self.polls += 1
            for node_id in offline:
                self.seen.setdefault(node_id, time.monotonic())

    def __enter__(self) -> OfflinePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- 1. kill -9 and an empty restart under 500 agents --------------------------------------------

# 500 agents beating with unary Beat, 4 schedulers and the server share one Python process, so
# one core's worth of GIL. Measured on this 2-core machine: 500 beats/s (a 1 s interval) alone
# takes that whole core (beat p99 ~0.5 s, agents back only 3-6 s after Redis returns), 250 beats/s
# about 0.65 of it. So this test beats every 2 s, SUSPECT and OFFLINE after the default 3 and 5
# intervals; FAST's 0.2 s (2,500 beats/s) is far out of reach.
AGENTS = 500
INTERVAL = 2.0


@pytest.mark.timeout(300)
def test_kill9_and_empty_restart_under_500_agents(
    redisproc: RedisProc, make_fault_server: FaultServerFactory, history: History
) -> None:
    ls = make_fault_server(
        heartbeat_interval=INTERVAL,
        suspect_after=3 * INTERVAL,
        offline_after=5 * INTERVAL,
        sweep_interval=0.25,
        retention=60.0,
        max_concurrent_rpcs=2048,
    )
    table = LeaseTable()
    with Agents(target(ls), history, AGENTS, interval=INTERVAL, table=table) as agents:
        wait_for(lambda: len(nodes_with(ls, ONLINE)) == AGENTS, timeout=15)
        with (
            OfflinePoller(ls, every=0.5) as offline,
            Schedulers(
                target(ls), history, 4, table=table, deadline=0.5, lease_ttl=10.0, fail_chance=0.05
            ) as schedulers,
        ):
            wait_for(lambda: schedulers.granted >= 40, timeout=10)

            history.event(STATE_LOST, "test", how="kill -9")
            redisproc.kill()
            killed = time.monotonic()
            time.sleep(2 * INTERVAL)  # the outage (a fault parameter, not a wait for a condition)
            restarting = time.monotonic()
            redisproc.start()  # empty, on the same port
            back = redisproc.wait_ready()

            # Every agent is told to resync and is ONLINE again within 2 intervals + 1 s of Redis
            # answering (polled with a margin, then compared with the budget).
            budget = 2 * INTERVAL + 1.0

            def resynced() -> set[str]:
                return {n for n, times in agents.resyncs.items() if any(t > killed for t in times)}

            eventually(
                lambda: len(resynced()) == AGENTS and len(nodes_with(ls, ONLINE)) == AGENTS,
                budget + 5,
                lambda: (
                    f"after {budget + 5}s: {len(resynced())} agents resynced, "
                    f"{len(nodes_with(ls, ONLINE))} ONLINE of {AGENTS}; beats: {dict(agents.outcomes)}"
                ),
            )
            recovered = time.monotonic() - back

            granted = schedulers.granted
            eventually(
                lambda: schedulers.granted >= granted + 40,
                10,
                lambda: f"Match did not recover: {outcomes(history.ops(MATCH)[-50:])}",
            )
            # Hold past offline_after: nobody goes OFFLINE for the silence Redis caused.
            time.sleep(5 * INTERVAL + 0.5)
            online_at_end = nodes_with(ls, ONLINE)

    assert recovered <= budget, f"agents all ONLINE {recovered:.2f}s after Redis answered (budget {budget}s)"
    assert online_at_end == set(agents.node_ids), (
        f"not ONLINE at the end: {set(agents.node_ids) - online_at_end}"
    )
    assert not offline.seen, f"{len(offline.seen)} nodes shown OFFLINE, e.g. {sorted(offline.seen)[:5]}"
    assert offline.polls > 10
    assert not offline_events(ls), offline_events(ls)[:5]

    # During the outage every call failed, UNAVAILABLE or at its own deadline, and in time. (A call
    # sent just before the restart may be served by the new Redis: only calls whose deadline ran
    # out before the restart must have failed.)
    during = [op for op in history.ops() if killed <= op.invoke < restarting and op.kind != STATE_LOST]
    assert len(during) > 100, f"only {len(during)} calls during the outage"
    wrong = [
        str(op)
        for op in during
        if op.outcome not in OUTAGE_CODES and op.invoke + (op.deadline or 0.0) < restarting
    ]
    assert not wrong, f"{len(wrong)} calls during the outage did not fail with UNAVAILABLE: {wrong[:5]}"
    slow = late(during)
    assert not slow, f"{len(slow)} calls during the outage overran deadline + 100 ms: {slow[:5]}"
    assert Counter(op.outcome for op in history.ops(BEAT))[OK] > 4 * AGENTS


SPECIAL = "model-of-the-held-nodes"


@pytest.mark.timeout(120)
def test_jobs_running_across_kill9_keep_their_nodes(
    redisproc: RedisProc, make_fault_server: FaultServerFactory, history: History
) -> None:
    """Leases held across a kill -9 and empty restart: the server forgot them, but the agents
    re-register reporting the jobs they run, so no node is handed to a second job until its holder
    has learned the lease is gone (NOT_FOUND) and the node's beats say the job ended."""
    ls = make_fault_server(heartbeat_interval=0.5, suspect_after=1.5, offline_after=2.5, sweep_interval=0.1)
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents = stack.enter_context(
            Agents(target(ls), history, 10, interval=0.5, table=table, models=[SPECIAL])
        )
        holders = Schedulers(
            target(ls), history, 1, table=table, prefix="holder", model=SPECIAL, lease_ttl=60.0
        )
        stack.callback(holders.stop)
        held = [holders.match("holder", f"long-job-{i}", give_up=5) for i in range(10)]
        leases = [lease for lease in held if lease is not None]
        assert sorted(lease.node_id for lease in leases) == sorted(agents.node_ids)
        for lease in leases:
            table.add(lease)
        wait_for(lambda: all(ls.get(n).running_jobs == 1 for n in agents.node_ids), timeout=5)

        history.event(STATE_LOST, "test", how="kill -9")
        redisproc.kill()
        redisproc.start()
        wait_for(lambda: len(nodes_with(ls, ONLINE)) == 10 and all(agents.resyncs.values()), timeout=5)

        # Every node still runs its job: nothing to hand out.
        intruder = Schedulers(target(ls), history, 1, table=table, prefix="intruder", model=SPECIAL)
        stack.callback(intruder.stop)
        for i in range(10):
            got = intruder.match("intruder", f"intruder-{i}", give_up=0.01)
            assert got is None, f"a node still running a job was handed out after the restart: {got}"
        # The holders learn their leases are gone; the nodes' next beats free the slots.
        for lease in leases:
            assert holders.renew("holder", lease).outcome == "NOT_FOUND"
            table.remove(lease.lease_id)
        freed = wait_for(lambda: intruder.match("intruder", "intruder-after", give_up=0.01), timeout=3)
        assert freed is not None
        assert intruder.end("intruder", freed).outcome == OK


# -- 2. clean shutdown and restart with the data (AOF) ------------------------------------------

NO_NODE_MODEL = "model-with-no-node"


@pytest.mark.timeout(180)
def test_clean_restart_with_aof_keeps_leases_flags_and_waiting_jobs(
    redisproc: RedisProc, make_fault_server: FaultServerFactory, history: History
) -> None:
    redisproc.shutdown()
    redisproc.wipe()
    redisproc.start(persistent=True)
    ls = make_fault_server(heartbeat_interval=0.5, suspect_after=1.5, offline_after=2.5, sweep_interval=0.1)
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents = stack.enter_context(Agents(target(ls), history, 20, interval=0.5, table=table))
        wait_for(lambda: len(nodes_with(ls, ONLINE)) == 20, timeout=10)
        # Before the restart: a flag in force, a lease held, a job waiting for a model no node has.
        flagged = agents.node_ids[0]
        ls.flags.SetFlag(
            flag_service_pb2.SetFlagRequest(node_id=flagged, kind=flag_pb2.FLAG_KIND_FREEZE, reason="test"),
            timeout=5,
        )
        holder = Schedulers(target(ls), history, 1, table=table, prefix="holder", lease_ttl=60.0)
        stack.callback(holder.stop)
        held = holder.match("holder", "held-job", give_up=5)
        assert held is not None and held.node_id != flagged
        table.add(held)
        queued = QueueScheduler(target(ls), history, "waiting-sched", table=table, regions=["eu-west"])
        stack.callback(queued.stop)
        assert queued.enqueue("waiting-job", model=NO_NODE_MODEL).ok
        assert _waiting_jobs(ls, NO_NODE_MODEL) == 1

        with Schedulers(target(ls), history, 2, table=table, deadline=0.5, lease_ttl=10.0) as schedulers:
            wait_for(lambda: schedulers.granted >= 20, timeout=10)
            redisproc.shutdown()
            down = time.monotonic()
            redisproc.start()  # with its AOF
            back = redisproc.wait_ready()

            # The lease granted before the restart renews.
            renewed = wait_for(lambda: _renew_answer(holder, held), timeout=5)
            assert renewed == OK, f"Renew of a lease granted before the restart answered {renewed}"
            granted = schedulers.granted
            eventually(
                lambda: schedulers.granted >= granted + 20,
                10,
                lambda: f"Match did not recover: {outcomes(history.ops(MATCH)[-50:])}",
            )
        assert holder.end("holder", held).outcome == OK
        table.remove(held.lease_id)

        # The flag is still in force, and the job still waits.
        flags = [f.kind for f in ls.get(flagged).flags]
        assert flag_pb2.FLAG_KIND_FREEZE in flags, f"flag lost across the restart: {flags}"
        assert _waiting_jobs(ls, NO_NODE_MODEL) == 1, "the waiting job was lost across the restart"
        assert queued.cancel("waiting-job").ok

    matched_flagged = [str(op) for op in history.ops(MATCH) if op.result and op.result.node_id == flagged]
    assert not matched_flagged, f"the FREEZE-flagged node was matched: {matched_flagged[:5]}"
    told = sorted(n for n, times in agents.resyncs.items() if times)
    assert not told, f"{len(told)} agents were told to resync across a restart that kept the data: {told[:5]}"
    assert back - down < 5


def _waiting_jobs(ls: Harness, model: str) -> int:
    request = queue_service_pb2.GetQueueRequest(env=ENV, model=model)
    return int(ls.queue.GetQueue(request, timeout=5).waiting_jobs)


def _renew_answer(scheduler: Schedulers, lease: LeaseRef) -> str | None:
    """The Renew answer once the server answers at all (None while it is UNAVAILABLE)."""
    reply = scheduler.renew("holder", lease)
    return None if reply.outcome in OUTAGE_CODES else reply.outcome


# -- 3. SIGSTOP for 3 s under Match/Release load -------------------------------------------------


@pytest.mark.timeout(180)
def test_frozen_redis_calls_end_within_deadline_and_recover(
    redisproc: RedisProc, make_fault_server: FaultServerFactory, history: History
) -> None:
    ls = make_fault_server(heartbeat_interval=0.5, suspect_after=1.5, offline_after=2.5, sweep_interval=0.1)
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents = stack.enter_context(Agents(target(ls), history, 30, interval=0.5, table=table))
        wait_for(lambda: len(nodes_with(ls, ONLINE)) == 30, timeout=10)
        schedulers = stack.enter_context(
            Schedulers(target(ls), history, 6, table=table, deadline=0.5, hold=(0.01, 0.05), lease_ttl=10.0)
        )
        wait_for(lambda: schedulers.granted >= 50, timeout=10)
        # Besides whatever the schedulers have in flight, three new jobs ask for a node while Redis
        # is frozen: each is cut off, and retried with its job_id.
        cutoff = Schedulers(target(ls), history, 3, table=table, prefix="cut", max_jobs=2, lease_ttl=10.0)
        stack.callback(cutoff.stop)
        with redisproc.frozen(3.0):
            frozen_at = redisproc.stopped_at
            cutoff.start()
        thawed = redisproc.thawed_at
        assert frozen_at is not None and thawed is not None

        # Normal within 2 s of SIGCONT: a fresh Match succeeds and its Release answers OK.
        probe = Schedulers(target(ls), history, 1, table=table, prefix="probe", deadline=0.5)
        stack.callback(probe.stop)
        lease = wait_for(lambda: probe.match("probe", "probe-job", give_up=0.5), timeout=2)
        assert lease is not None
        assert probe.end("probe", lease).outcome == OK
        eventually(
            lambda: cutoff.granted == 6,
            5,
            lambda: f"jobs cut off by the freeze: {_job_outcomes(history, 'cut-')}",
        )
        schedulers.grant_more(50, timeout=10)
        schedulers.stop()

        # Every slot is free again once the load has stopped.
        eventually(
            lambda: _idle_nodes(ls) == 30,
            5,
            lambda: f"{_idle_nodes(ls)} of 30 nodes idle after the load stopped; leases held: {table.held()}",
        )
        assert nodes_with(ls, ONLINE) == set(agents.node_ids)

    lease_ops = history.ops(MATCH, RENEW, RELEASE)
    slow = late(lease_ops)
    assert not slow, f"{len(slow)} calls overran their 500 ms deadline by more than 100 ms: {slow[:5]}"

    # The jobs cut off by the freeze got their lease within 2 s of SIGCONT.
    cut = {op.job_id for op in lease_ops if op.kind == MATCH and frozen_at <= op.invoke < thawed - 0.5}
    assert {f"cut-{i}-job-0" for i in range(3)} <= cut, cut
    for job_id in sorted(cut):
        got = [op.complete for op in history.ops(MATCH) if op.job_id == job_id and op.outcome == OK]
        assert got and got[0] is not None, f"job {job_id}, cut off by the freeze, never got a lease"
        assert got[0] <= thawed + 2.0, f"job {job_id} got its lease {got[0] - thawed:.2f}s after SIGCONT"

    # Releases cut off by the freeze, retried, end OK: a retry whose first copy did run is told
    # the lease is released, not "no such lease" (ended leases stay as tombstones).
    releases = history.ops(RELEASE)
    for lease_id in sorted({op.lease.lease_id for op in releases if op.lease and op.outcome in OUTAGE_CODES}):
        final = [op for op in releases if op.lease and op.lease.lease_id == lease_id][-1]
        assert final.outcome == OK, f"Release of {lease_id} ended {final}"
    assert not offline_events(ls), offline_events(ls)[:5]
    told = sorted(n for n, times in agents.resyncs.items() if times)
    assert not told, f"a freeze made {len(told)} agents resync: {told[:5]}"


def _idle_nodes(ls: Harness) -> int:
    request = queue_service_pb2.GetQueueRequest(env=ENV, model=MODEL)
    return int(ls.queue.GetQueue(request, timeout=5).idle_nodes)


def _job_outcomes(history: History, prefix: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for op in history.ops(MATCH):
        if op.job_id.startswith(prefix):
            found.setdefault(op.job_id, []).append(str(op.outcome))
    return found


# -- 4. waiting jobs across a Redis wipe: every scheduler is told -------------------------------
#
# The contract: EnqueueResponse and GetQueueResponse carry `epoch` and `queue_lost`; EnqueueRequest,
# GetQueueRequest and AssignmentsRequest carry `known_epoch` (0 = unknown); an Assignments stream
# whose known_epoch is older than the current epoch, or that sees the epoch change while open,
# ends ABORTED with ErrorInfo reason QUEUE_LOST and metadata "epoch" (the new epoch).

WAIT_MODEL = "model-with-no-node-yet"


@pytest.fixture(params=["flushall", "kill9"])
def wipe(request: pytest.FixtureRequest) -> Iterator[str]:
    yield str(request.param)


@pytest.mark.timeout(180)
def test_waiting_jobs_lost_in_a_wipe_are_reported_to_every_scheduler(
    wipe: str, redisproc: RedisProc, make_fault_server: FaultServerFactory, history: History
) -> None:
    ls = make_fault_server()
    table = LeaseTable()
    with contextlib.ExitStack() as stack:
        agents = stack.enter_context(Agents(target(ls), history, 4, interval=0.2, table=table))
        schedulers = {
            name: stack.enter_context(
                QueueScheduler(target(ls), history, name, table=table, regions=["eu-west"], requeue_lost=True)
            )
            for name in (f"qsched-{i}" for i in range(3))
        }
        for name, s in schedulers.items():
            for i in range(5):  # assigned at once, on the agents' model, and taken up
                assert s.enqueue(f"{name}-now-{i}").ok
            for i in range(5):  # waiting for a model no node serves yet
                assert s.enqueue(f"{name}-wait-{i}", model=WAIT_MODEL).ok
        wait_for(lambda: all(len(s.assigned) == 5 for s in schedulers.values()), timeout=10)
        assert _waiting_jobs(ls, WAIT_MODEL) == 15
        old_epoch = _epoch(ls)
        assert old_epoch > 0, "GetQueueResponse.epoch is 0"
        assert {s.known_epoch for s in schedulers.values()} == {old_epoch}
        absent = QueueScheduler(target(ls), history, "qsched-absent", table=table, regions=["eu-west"])
        stack.callback(absent.stop)
        assert absent.enqueue("absent-wait-0", model=WAIT_MODEL).ok  # its stream is not open

        history.event(STATE_LOST, "test", how=wipe)
        if wipe == "flushall":
            ls.redis.flushall()
        else:
            redisproc.kill()
            redisproc.start()
        wiped = time.monotonic()

        # Every connected scheduler's stream ends ABORTED / QUEUE_LOST, naming the new epoch.
        eventually(
            lambda: all(s.losses for s in schedulers.values()),
            5.0,
            lambda: (
                "not every scheduler was told its waiting jobs were lost within 5 s of the wipe; "
                f"how their Assignments streams ended: {_stream_endings(schedulers)}"
            ),
        )
        new_epoch = _epoch(ls)
        assert new_epoch > old_epoch, f"epoch {old_epoch} -> {new_epoch} across the wipe"
        for name, s in schedulers.items():
            when, epoch, how = s.losses[0]
            assert (how, epoch) == ("assignments", new_epoch), f"{name} was told by {how}, epoch {epoch}"
            assert when - wiped < 3.0, f"{name} was told {when - wiped:.2f}s after the wipe"

        # A scheduler that was away hears it on its next call: GetQueue and Enqueue say so, and an
        # Assignments stream opened with the old epoch ends ABORTED / QUEUE_LOST at once.
        stale = ls.queue.GetQueue(
            queue_service_pb2.GetQueueRequest(env=ENV, model=WAIT_MODEL, known_epoch=old_epoch), timeout=5
        )
        assert (stale.queue_lost, stale.epoch) == (True, new_epoch), f"GetQueue(known_epoch=old): {stale}"
        with pytest.raises(grpc.RpcError) as ended:
            request = queue_service_pb2.AssignmentsRequest(
                scheduler_id="qsched-absent", known_epoch=old_epoch
            )
            next(iter(ls.queue.Assignments(request, timeout=5)))
        assert ended.value.code() == grpc.StatusCode.ABORTED, ended.value
        reason, metadata = error_info(ended.value)
        assert (reason, metadata.get("epoch")) == ("QUEUE_LOST", str(new_epoch))
        assert absent.enqueue("absent-wait-1", model=WAIT_MODEL).ok
        assert [(epoch, how) for _, epoch, how in absent.losses] == [(new_epoch, "enqueue")], absent.losses
        fresh = ls.queue.GetQueue(
            queue_service_pb2.GetQueueRequest(env=ENV, model=WAIT_MODEL, known_epoch=new_epoch), timeout=5
        )
        assert not fresh.queue_lost

        # The schedulers enqueued their lost jobs again: nodes for the model take each once.
        absent.start()
        wait_for(lambda: all(agents.resyncs.values()), timeout=5)
        with Agents(target(ls), history, 2, interval=0.2, prefix="waiter", models=[WAIT_MODEL]):
            eventually(
                lambda: (
                    all(len(s.assigned) == 10 for s in schedulers.values())
                    and "absent-wait-1" in absent.assigned
                ),
                15,
                lambda: f"assigned: { {n: sorted(s.assigned) for n, s in schedulers.items()} }",
            )
        for s in [*schedulers.values(), absent]:
            assert s.settle() == set()


def _stream_endings(schedulers: dict[str, QueueScheduler]) -> dict[str, dict[str, int]]:
    return {name: dict(s.stream_errors) for name, s in schedulers.items()}


def _epoch(ls: Harness) -> int:
    request = queue_service_pb2.GetQueueRequest(env=ENV, model=WAIT_MODEL)
    return int(ls.queue.GetQueue(request, timeout=5).epoch)


# -- 5. Heartbeat streams through a freeze and an empty restart ----------------------------------


@pytest.mark.timeout(180)
def test_streaming_agents_ride_out_a_freeze_and_an_empty_restart(
    redisproc: RedisProc, make_fault_server: FaultServerFactory
) -> None:
    """Streams are served on the event loop and their beats wait on the batcher: a frozen Redis
    must end them UNAVAILABLE (or answer late), never INTERNAL, never hang them; after a kill -9
    and an empty restart every agent is told to resync and registers again."""
    ls = make_fault_server(heartbeat_interval=0.5, suspect_after=1.5, offline_after=2.5, sweep_interval=0.1)
    stop = threading.Event()
    agents = [NodeAgent(target(ls), spec(f"streamer-{i}"), call_timeout=2.0) for i in range(40)]
    failures: list[BaseException] = []

    def run(agent: NodeAgent) -> None:
        try:
            agent.run(stop, Reading, max_backoff=0.5)
        except BaseException as exc:  # an answer the agent does not retry: INTERNAL, UNKNOWN, ...
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(agent,), daemon=True) for agent in agents]
    for thread in threads:
        thread.start()

    def all_online() -> bool:
        return all(ls.liveness(agent.spec.node_id) == ONLINE for agent in agents)

    try:
        wait_for(all_online, timeout=15)
        with redisproc.frozen(2.0):
            pass
        eventually(all_online, 15, lambda: f"not back ONLINE after the freeze; failures {failures[:3]}")
        registered = [agent.registrations for agent in agents]
        redisproc.restart(keep_data=False, crash=True)
        eventually(
            lambda: (
                all(a.registrations > r for a, r in zip(agents, registered, strict=True)) and all_online()
            ),
            20,
            lambda: f"agents not registered again after the restart; failures {failures[:3]}",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        for agent in agents:
            agent.close()
    assert not failures, failures[:3]
    assert not any(thread.is_alive() for thread in threads), "an agent hung on its stream"
