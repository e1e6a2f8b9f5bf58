import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from livestate.v1 import lease_pb2 as _lease_pb2
from livestate.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SelectionPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SELECTION_POLICY_UNSPECIFIED: _ClassVar[SelectionPolicy]
    SELECTION_POLICY_LONGEST_IDLE: _ClassVar[SelectionPolicy]
    SELECTION_POLICY_RANDOM: _ClassVar[SelectionPolicy]
    SELECTION_POLICY_MOST_FREE_VRAM: _ClassVar[SelectionPolicy]
SELECTION_POLICY_UNSPECIFIED: SelectionPolicy
SELECTION_POLICY_LONGEST_IDLE: SelectionPolicy
SELECTION_POLICY_RANDOM: SelectionPolicy
SELECTION_POLICY_MOST_FREE_VRAM: SelectionPolicy

class MatchRequest(_message.Message):
    __slots__ = ("job_id", "env", "model", "regions", "min_vram_mb", "gpu_models", "subcloud", "labels", "exclude_node_ids", "lease_ttl", "wait", "priority", "policy")
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
    WAIT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
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
    wait: _duration_pb2.Duration
    priority: int
    policy: SelectionPolicy
    def __init__(self, job_id: _Optional[str] = ..., env: _Optional[str] = ..., model: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ..., min_vram_mb: _Optional[int] = ..., gpu_models: _Optional[_Iterable[str]] = ..., subcloud: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., exclude_node_ids: _Optional[_Iterable[str]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., priority: _Optional[int] = ..., policy: _Optional[_Union[SelectionPolicy, str]] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("lease", "node")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    lease: _lease_pb2.Lease
    node: _node_pb2.Node
    def __init__(self, lease: _Optional[_Union[_lease_pb2.Lease, _Mapping]] = ..., node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("lease_id", "fencing_token", "lease_ttl")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    fencing_token: int
    lease_ttl: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: _lease_pb2.Lease
    def __init__(self, lease: _Optional[_Union[_lease_pb2.Lease, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id", "fencing_token")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    fencing_token: int
    def __init__(self, lease_id: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("lease_id", "fencing_token", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    fencing_token: int
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class FailResponse(_message.Message):
    __slots__ = ("attempts",)
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    def __init__(self, attempts: _Optional[int] = ...) -> None: ...
