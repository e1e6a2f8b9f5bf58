import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from livestate.v1 import lease_pb2 as _lease_pb2
from livestate.v1 import match_service_pb2 as _match_service_pb2
from livestate.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnqueueRequest(_message.Message):
    __slots__ = ("job_id", "env", "model", "regions", "min_vram_mb", "gpu_models", "subcloud", "labels", "exclude_node_ids", "lease_ttl", "priority", "policy", "scheduler_id", "ttl", "known_epoch")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_VRAM_MB_FIELD_NUMBER: _ClassVar[int]
    GPU_MODELS_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    KNOWN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    env: str
    model: str
    regions: _containers.RepeatedScalarFieldContainer[str]
    min_vram_mb: int
    gpu_models: _containers.RepeatedScalarFieldContainer[str]
    subcloud: str
    labels: _containers.ScalarMap[str, str]
    exclude_node_ids: _containers.RepeatedScalarFieldContainer[str]
    lease_ttl: _duration_pb2.Duration
    priority: int
    policy: _match_service_pb2.SelectionPolicy
    scheduler_id: str
    ttl: _duration_pb2.Duration
    known_epoch: int
    def __init__(self, job_id: _Optional[str] = ..., env: _Optional[str] = ..., model: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ..., min_vram_mb: _Optional[int] = ..., gpu_models: _Optional[_Iterable[str]] = ..., subcloud: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., exclude_node_ids: _Optional[_Iterable[str]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., priority: _Optional[int] = ..., policy: _Optional[_Union[_match_service_pb2.SelectionPolicy, str]] = ..., scheduler_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., known_epoch: _Optional[int] = ...) -> None: ...

class EnqueueResponse(_message.Message):
    __slots__ = ("position", "epoch", "queue_lost")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LOST_FIELD_NUMBER: _ClassVar[int]
    position: int
    epoch: int
    queue_lost: bool
    def __init__(self, position: _Optional[int] = ..., epoch: _Optional[int] = ..., queue_lost: _Optional[bool] = ...) -> None: ...

class AssignmentsRequest(_message.Message):
    __slots__ = ("scheduler_id", "known_epoch")
    SCHEDULER_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    scheduler_id: str
    known_epoch: int
    def __init__(self, scheduler_id: _Optional[str] = ..., known_epoch: _Optional[int] = ...) -> None: ...

class AssignmentsResponse(_message.Message):
    __slots__ = ("job_id", "lease", "node")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: _lease_pb2.Lease
    node: _node_pb2.Node
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[_Union[_lease_pb2.Lease, _Mapping]] = ..., node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetQueueRequest(_message.Message):
    __slots__ = ("env", "model", "known_epoch")
    ENV_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KNOWN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    env: str
    model: str
    known_epoch: int
    def __init__(self, env: _Optional[str] = ..., model: _Optional[str] = ..., known_epoch: _Optional[int] = ...) -> None: ...

class GetQueueResponse(_message.Message):
    __slots__ = ("idle_nodes", "waiting_jobs", "depths", "oldest_wait", "env", "model", "epoch", "queue_lost")
    IDLE_NODES_FIELD_NUMBER: _ClassVar[int]
    WAITING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DEPTHS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LOST_FIELD_NUMBER: _ClassVar[int]
    idle_nodes: int
    waiting_jobs: int
    depths: _containers.RepeatedCompositeFieldContainer[PriorityDepth]
    oldest_wait: _duration_pb2.Duration
    env: str
    model: str
    epoch: int
    queue_lost: bool
    def __init__(self, idle_nodes: _Optional[int] = ..., waiting_jobs: _Optional[int] = ..., depths: _Optional[_Iterable[_Union[PriorityDepth, _Mapping]]] = ..., oldest_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., env: _Optional[str] = ..., model: _Optional[str] = ..., epoch: _Optional[int] = ..., queue_lost: _Optional[bool] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ("env",)
    ENV_FIELD_NUMBER: _ClassVar[int]
    env: str
    def __init__(self, env: _Optional[str] = ...) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueSummary]
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueSummary, _Mapping]]] = ...) -> None: ...

class QueueSummary(_message.Message):
    __slots__ = ("env", "model", "idle_nodes", "waiting_jobs", "depths", "oldest_wait")
    ENV_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IDLE_NODES_FIELD_NUMBER: _ClassVar[int]
    WAITING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DEPTHS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_FIELD_NUMBER: _ClassVar[int]
    env: str
    model: str
    idle_nodes: int
    waiting_jobs: int
    depths: _containers.RepeatedCompositeFieldContainer[PriorityDepth]
    oldest_wait: _duration_pb2.Duration
    def __init__(self, env: _Optional[str] = ..., model: _Optional[str] = ..., idle_nodes: _Optional[int] = ..., waiting_jobs: _Optional[int] = ..., depths: _Optional[_Iterable[_Union[PriorityDepth, _Mapping]]] = ..., oldest_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PriorityDepth(_message.Message):
    __slots__ = ("priority", "waiting_jobs")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WAITING_JOBS_FIELD_NUMBER: _ClassVar[int]
    priority: int
    waiting_jobs: int
    def __init__(self, priority: _Optional[int] = ..., waiting_jobs: _Optional[int] = ...) -> None: ...
