"""Scheduler: match jobs to nodes, hold the lease while the job runs, end it.

    scheduler = Scheduler("127.0.0.1:50051", "sched-a")
    found = scheduler.match("job-1", env="mainnet", model="llama-3-8b")
    if found is not None:
        with scheduler.holding(found.lease) as held:
            run(found.lease.node_id)        # renewed meanwhile; an exception ends it with Fail

    for assignment in scheduler.assignments():   # jobs given with enqueue(), as nodes free up
        ...

Every call has a deadline (`call_timeout`, or the one passed). The channel retries only what is
safe to send twice (retries.py): a Match is retried with its job_id, so a retry after a lost
reply gets the same lease, never a second one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from livestate.client.retries import ChannelUser
from livestate.client.streams import reconnect_or_raise, reopened
from livestate.v1 import lease_pb2
from livestate.v1 import match_service_pb2 as mpb
from livestate.v1 import match_service_pb2_grpc as mpb_grpc
from livestate.v1 import queue_service_pb2 as qpb
from livestate.v1 import queue_service_pb2_grpc as qpb_grpc

log = logging.getLogger(__name__)


def duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def error_info(err: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata of a failed call ("" and {} when it has none)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason), dict(info.metadata)
    return "", {}


# What Renew or Release answer for a lease that is gone (expired, or its node went offline) or
# was taken over (a newer fencing token).
LOST = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


class QueueLost(Exception):
    """The server's live state was lost: the jobs this scheduler had waiting are gone."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"the jobs waiting before epoch {epoch} were lost: enqueue them again")
        self.epoch = epoch


class Held:
    """A lease being renewed while its job runs (see Scheduler.holding)."""

    def __init__(self, lease: lease_pb2.Lease) -> None:
        self.lease = lease
        self.lost = threading.Event()  # set when a Renew says the lease is gone: stop the job
        self.renewals = 0
        self.outcome = ""  # "released" or "failed" once the block has ended


class Scheduler(ChannelUser):
    def __init__(
        self,
        target: str | grpc.Channel,
        scheduler_id: str,
        *,
        call_timeout: float = 5.0,
        metadata: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(target, call_timeout, metadata)
        self.match_stub = mpb_grpc.MatchServiceStub(self.channel)
        self.queue_stub = qpb_grpc.QueueServiceStub(self.channel)
        self.scheduler_id = scheduler_id
        self.known_epoch = 0

    # -- one job now ---------------------------------------------------------------------------

    def match(
        self,
        job_id: str,
        *,
        env: str,
        model: str,
        lease_ttl: float | None = None,
        wait: float | None = None,
        timeout: float | None = None,
        **requirements: Any,
    ) -> mpb.MatchResponse | None:
        """A lease on an eligible node for the job, or None when none is eligible (NOT_FOUND, or
        with `wait`: none freed up in time).
        `requirements` are MatchRequest fields (regions, min_vram_mb, gpu_models, subcloud,
        labels, exclude_node_ids, priority, policy). With `wait`, the server holds the call that
        long for a node to free up; the deadline then covers the wait."""
        if not job_id:
            raise ValueError("job_id is required: it is what makes a retried Match safe")
        request = mpb.MatchRequest(
            job_id=job_id,
            env=env,
            model=model,
            lease_ttl=duration(lease_ttl),
            wait=duration(wait),
            **requirements,
        )
        if timeout is None and wait is not None:
            timeout = self.call_timeout + wait
        try:
            response: mpb.MatchResponse = self.match_stub.Match(request, **self._opts(timeout))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and error_info(err)[0] == "WAIT_EXPIRED":
                return None  # waited `wait` and no node freed up (the call's own deadline raises)
            raise
        return response

    def renew(
        self, lease: lease_pb2.Lease, ttl: float | None = None, timeout: float | None = None
    ) -> lease_pb2.Lease:
        request = mpb.RenewRequest(
            lease_id=lease.lease_id, fencing_token=lease.fencing_token, lease_ttl=duration(ttl)
        )
        response: mpb.RenewResponse = self.match_stub.Renew(request, **self._opts(timeout))
        return response.lease

    def release(self, lease: lease_pb2.Lease, timeout: float | None = None) -> None:
        request = mpb.ReleaseRequest(lease_id=lease.lease_id, fencing_token=lease.fencing_token)
        self.match_stub.Release(request, **self._opts(timeout))

    def fail(self, lease: lease_pb2.Lease, reason: str, timeout: float | None = None) -> int:
        """Ends the lease as failed (the node is scored, the job will not be matched to it
        again); returns how many nodes the job has been tried on."""
        request = mpb.FailRequest(
            lease_id=lease.lease_id, fencing_token=lease.fencing_token, reason=reason[:1024]
        )
        response: mpb.FailResponse = self.match_stub.Fail(request, **self._opts(timeout))
        return int(response.attempts)

    @contextlib.contextmanager
    def holding(
        self, lease: lease_pb2.Lease, *, ttl: float | None = None, every: float | None = None
    ) -> Iterator[Held]:
        """Renews the lease (every third of its remaining time, or `every` seconds) while the
        block runs; Releases it when the block ends, Fails it when the block raises. When a
        Renew (or the final Release) finds the lease gone (expired, or the node went offline),
        `held.lost` is set and nothing is raised for it: the job should stop, or its result be
        checked, as another node may have been given the job."""
        held = Held(lease)
        stop = threading.Event()
        period = every if every is not None else max(0.05, (ttl or _remaining(lease)) / 3)
        renewer = threading.Thread(target=self._renew_until, args=(held, stop, ttl, period), daemon=True)
        renewer.start()
        try:
            yield held
        except BaseException as exc:
            stop.set()
            renewer.join()
            if not held.lost.is_set():
                with contextlib.suppress(grpc.RpcError):
                    self.fail(held.lease, f"{type(exc).__name__}: {exc}")
                    held.outcome = "failed"
            raise
        stop.set()
        renewer.join()
        if not held.lost.is_set():
            try:
                self.release(held.lease)
                held.outcome = "released"
            except grpc.RpcError as err:
                if err.code() not in LOST:
                    raise
                held.lost.set()  # it lapsed after the last renewal: the job's result may be void

    def _renew_until(self, held: Held, stop: threading.Event, ttl: float | None, period: float) -> None:
        while not stop.wait(period):
            try:
                held.lease = self.renew(held.lease, ttl)
                held.renewals += 1
            except grpc.RpcError as err:
                if err.code() in LOST:
                    log.warning("lease %s lost: %s", held.lease.lease_id, err.details())
                    held.lost.set()
                    return
                log.warning("renewing lease %s failed (%s); trying again", held.lease.lease_id, err.code())

    # -- jobs that wait for a node -------------------------------------------------------------

    def enqueue(
        self,
        job_id: str,
        *,
        env: str,
        model: str,
        ttl: float | None = None,
        lease_ttl: float | None = None,
        timeout: float | None = None,
        **requirements: Any,
    ) -> qpb.EnqueueResponse:
        """Leaves the job waiting for a node; its assignment comes on `assignments()`. Raises
        QueueLost when jobs enqueued earlier were lost (enqueue them again; this one is in)."""
        if not job_id:
            raise ValueError("job_id is required: it is what makes a retried Enqueue safe")
        request = qpb.EnqueueRequest(
            job_id=job_id,
            env=env,
            model=model,
            scheduler_id=self.scheduler_id,
            ttl=duration(ttl),
            lease_ttl=duration(lease_ttl),
            known_epoch=self.known_epoch,
            **requirements,
        )
        response: qpb.EnqueueResponse = self.queue_stub.Enqueue(request, **self._opts(timeout))
        lost = response.queue_lost
        self.known_epoch = max(self.known_epoch, int(response.epoch))
        if lost:
            raise QueueLost(int(response.epoch))
        return response

    def cancel(self, job_id: str, timeout: float | None = None) -> bool:
        """Takes a waiting job out; False when it was not waiting (assigned, expired, or a
        retried Cancel whose first copy already took it out)."""
        try:
            self.queue_stub.Cancel(qpb.CancelRequest(job_id=job_id), **self._opts(timeout))
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return False
            raise
        return True

    def assignments(
        self,
        stop: threading.Event | None = None,
        *,
        on_lost: Callable[[QueueLost], None] | None = None,
        max_backoff: float = 5.0,
    ) -> Iterator[qpb.AssignmentsResponse]:
        """Assignments of this scheduler's enqueued jobs, as they come, across reconnects (the
        server replays those not yet taken up, so none is missed). When the server's state was
        lost, `on_lost` is called (then the stream goes on) or, without it, QueueLost is raised.
        Ends when `stop` is set."""
        stop = stop or threading.Event()

        def opened() -> Any:
            request = qpb.AssignmentsRequest(scheduler_id=self.scheduler_id, known_epoch=self.known_epoch)
            return self.queue_stub.Assignments(request, metadata=self.metadata)

        def on_error(err: grpc.RpcError) -> bool:
            reason, meta = error_info(err)
            if err.code() == grpc.StatusCode.ABORTED and reason == "QUEUE_LOST":
                lost = QueueLost(int(meta.get("epoch", "0") or 0))
                self.known_epoch = max(self.known_epoch, lost.epoch)
                if on_lost is None:
                    raise lost from err
                on_lost(lost)
                return True
            return reconnect_or_raise(err)

        yield from reopened(opened, stop, on_error, max_backoff)

    def __enter__(self) -> Scheduler:
        return self


def _remaining(lease: lease_pb2.Lease) -> float:
    left = lease.expire_time.ToNanoseconds() / 1e9 - time.time()
    return max(0.3, left)
