"""The exceptions servicers raise, and the one mapper that turns them into gRPC statuses.

    LivestateError               base; carries a gRPC code and an AIP-193 ErrorInfo reason
    ├── InvalidArgument          bad input; names the field (ErrorInfo + BadRequest details)
    ├── NotFound
    ├── FailedPrecondition
    ├── Aborted                  a concurrent call on the same thing won; retry
    ├── PermissionDenied         the caller's role or node binding does not allow this
    ├── ResourceExhausted
    ├── Unavailable              Redis unreachable, frozen, or refusing to serve (out of memory,
    │                            read-only, loading, busy...: the reason says which); safe to retry
    └── Internal                 a bug (logged with its traceback; no details in the answer)

Servicers just raise: the edge (edge.py), through which every call runs, ends each call that
raised with `status_of` its exception, unary and streaming alike. Redis errors that mean "the
store is not answering" become UNAVAILABLE. Anything else is a bug: it is logged with its
traceback and answered INTERNAL without leaking details.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
import redis.exceptions
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from livestate.server.core import metrics

log = logging.getLogger(__name__)

DOMAIN = "livestate"


class LivestateError(Exception):
    """An answer other than OK. A subclass names its status code, and the reason its ErrorInfo
    gives unless the raiser names a narrower one: `class NotFound(LivestateError, code=...)`."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "UNKNOWN"

    def __init_subclass__(cls, *, code: grpc.StatusCode | None = None, reason: str | None = None) -> None:
        super().__init_subclass__()
        if code is not None:
            cls.code = code
            cls.reason = code.name
        if reason is not None:
            cls.reason = reason

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[Any]:
        return [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)]


class InvalidArgument(LivestateError, code=grpc.StatusCode.INVALID_ARGUMENT):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", metadata={"field": field})
        self.field = field
        self.description = message

    def details(self) -> list[Any]:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=self.field, description=self.description
        )
        return [*super().details(), error_details_pb2.BadRequest(field_violations=[violation])]


class NotFound(LivestateError, code=grpc.StatusCode.NOT_FOUND):
    """The node, lease, job or subcloud named is not there (or no longer)."""


class FailedPrecondition(LivestateError, code=grpc.StatusCode.FAILED_PRECONDITION):
    """A valid request the current state refuses (another boot, a job waiting for another model)."""


class PermissionDenied(LivestateError, code=grpc.StatusCode.PERMISSION_DENIED):
    """The caller's role, or the node its token is bound to, does not allow the call."""


class Aborted(LivestateError, code=grpc.StatusCode.ABORTED):
    """What the caller was following is gone; it must start over (QueueLost)."""


class ResourceExhausted(LivestateError, code=grpc.StatusCode.RESOURCE_EXHAUSTED):
    """A rate limit or a stream budget is spent (counted in livestate_refused_total)."""


class Unavailable(LivestateError, code=grpc.StatusCode.UNAVAILABLE, reason="REDIS_UNAVAILABLE"):
    """Redis did not answer, or refused for its own state (down, frozen, OOM): nothing was decided."""


class Internal(LivestateError, code=grpc.StatusCode.INTERNAL):
    """A bug. Its details stay in the log, never in the answer."""


def to_status(err: LivestateError) -> grpc.Status:
    if isinstance(err, ResourceExhausted):
        metrics.REFUSED.labels(err.reason).inc()
    details = []
    for detail in err.details():
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    code = getattr(code_pb2, err.code.name)
    return rpc_status.to_status(status_pb2.Status(code=code, message=err.message, details=details))


# Redis errors that say "the store is not answering right now", never "your request was wrong".
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,  # includes MasterDownError
    redis.exceptions.TryAgainError,
    # A slot moved (a cluster failover or resharding): the command did not run there.
    redis.exceptions.AskError,  # includes MovedError
)

# A Redis that is up but refuses to serve says why with an error code; each code has its reason,
# so an operator can tell a full Redis from a demoted master from a slow script at a glance.
CONDITIONS = {
    "OOM": "REDIS_OOM",  # used memory above maxmemory with noeviction
    "READONLY": "REDIS_READONLY",  # a replica (e.g. a demoted master) refuses writes
    "LOADING": "REDIS_LOADING",  # loading a snapshot: starting up, or a replica's full sync
    "MASTERDOWN": "REDIS_MASTERDOWN",  # a replica cut off from its master, serving no stale data
    "NOREPLICAS": "REDIS_NOREPLICAS",  # fewer replicas than min-replicas-to-write
    "BUSY": "REDIS_BUSY",  # a script (or function) past its time limit holds the server
    # Ours, not Redis's: fewer replicas than ack_replicas acknowledged a write (replication.py).
    "NOTREPLICATED": "REDIS_NOT_REPLICATED",
}


class NotReplicated(redis.exceptions.ConnectionError):
    """Fewer replicas than required acknowledged a write in time: its answer is withheld."""

    def __init__(self, wanted: int, acked: int, timeout_ms: int) -> None:
        super().__init__(
            f"NOTREPLICATED {acked} of {wanted} replica(s) acknowledged the write within {timeout_ms} ms"
        )


# redis-py gives some codes a class of their own and strips the code from the message.
_CONDITION_CLASSES: tuple[tuple[type[redis.exceptions.RedisError], str], ...] = (
    (redis.exceptions.OutOfMemoryError, "OOM"),
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.BusyLoadingError, "LOADING"),
    (redis.exceptions.MasterDownError, "MASTERDOWN"),
    (NotReplicated, "NOTREPLICATED"),
)

# Where else a code shows: leading the message ("NOREPLICAS Not enough...", also as raised inside
# a script by Redis 7+), after a pipeline's annotation ("Command # 2 (...) of pipeline caused
# error: BUSY ..."), or in Redis 6's wrapping of a script error ("Error running script (call to
# f_..): @user_script:1: @user_script: 1: -OOM ..."). `\b` keeps BUSYKEY and BUSYGROUP out.
_CODE = "|".join(CONDITIONS)
_LEADING_CODE = re.compile(rf"(?:ERR )?-?({_CODE})\b")
_SCRIPT_ERROR_CODE = re.compile(rf"^(?:ERR )?Error running script\b.*?(?:^|: )-?({_CODE})\b", re.S)
_PIPELINE_PREFIX = "of pipeline caused error: "


def _condition(exc: redis.exceptions.RedisError) -> str | None:
    for cls, code in _CONDITION_CLASSES:
        if isinstance(exc, cls):
            return code
    status_code = getattr(exc, "status_code", None)  # the code recent redis-py parsed off
    if status_code in CONDITIONS:
        return str(status_code)
    if not isinstance(exc, redis.exceptions.ResponseError):
        return None
    message = str(exc)
    if _PIPELINE_PREFIX in message:
        # The command's arguments come before the prefix; only what follows its last
        # occurrence is Redis's answer.
        message = message.rpartition(_PIPELINE_PREFIX)[2]
    found = _LEADING_CODE.match(message) or _SCRIPT_ERROR_CODE.match(message)
    return found.group(1) if found else None


def from_redis(exc: redis.exceptions.RedisError) -> LivestateError | None:
    """UNAVAILABLE for a Redis that cannot serve now (safe to retry, possibly elsewhere), with
    the condition as its reason; None for anything else (a bug: INTERNAL)."""
    code = _condition(exc)
    if code is not None:
        # Not the error's text: a pipeline's annotation of it names keys and arguments.
        return Unavailable(f"redis cannot serve now ({code}); retry", reason=CONDITIONS[code])
    if isinstance(exc, _REDIS_DOWN):
        return Unavailable(f"redis unavailable: {type(exc).__name__}")
    return None


def status_of(exc: BaseException, method: str) -> grpc.Status:
    """The status a call that raised `exc` ends with; a bug is logged and answered INTERNAL."""
    err: LivestateError | None
    if isinstance(exc, LivestateError):
        err = exc
    elif isinstance(exc, redis.exceptions.RedisError):
        err = from_redis(exc)
    else:
        err = None
    if err is None:
        log.error("unexpected error in %s", method, exc_info=exc)
        err = Internal("internal error")
    return to_status(err)
