import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from livestate.v1 import flag_pb2 as _flag_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_IDLE: _ClassVar[NodeState]
    NODE_STATE_BUSY: _ClassVar[NodeState]
    NODE_STATE_LOADING: _ClassVar[NodeState]
    NODE_STATE_DRAINING: _ClassVar[NodeState]

class Liveness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIVENESS_UNSPECIFIED: _ClassVar[Liveness]
    LIVENESS_ONLINE: _ClassVar[Liveness]
    LIVENESS_SUSPECT: _ClassVar[Liveness]
    LIVENESS_OFFLINE: _ClassVar[Liveness]

class NodeEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_EVENT_TYPE_UNSPECIFIED: _ClassVar[NodeEventType]
    NODE_EVENT_TYPE_ONLINE: _ClassVar[NodeEventType]
    NODE_EVENT_TYPE_SUSPECT: _ClassVar[NodeEventType]
    NODE_EVENT_TYPE_OFFLINE: _ClassVar[NodeEventType]
    NODE_EVENT_TYPE_FLAGGED: _ClassVar[NodeEventType]
    NODE_EVENT_TYPE_UNFLAGGED: _ClassVar[NodeEventType]
    NODE_EVENT_TYPE_LEASE_LOST: _ClassVar[NodeEventType]
    NODE_EVENT_TYPE_DRAINED: _ClassVar[NodeEventType]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_IDLE: NodeState
NODE_STATE_BUSY: NodeState
NODE_STATE_LOADING: NodeState
NODE_STATE_DRAINING: NodeState
LIVENESS_UNSPECIFIED: Liveness
LIVENESS_ONLINE: Liveness
LIVENESS_SUSPECT: Liveness
LIVENESS_OFFLINE: Liveness
NODE_EVENT_TYPE_UNSPECIFIED: NodeEventType
NODE_EVENT_TYPE_ONLINE: NodeEventType
NODE_EVENT_TYPE_SUSPECT: NodeEventType
NODE_EVENT_TYPE_OFFLINE: NodeEventType
NODE_EVENT_TYPE_FLAGGED: NodeEventType
NODE_EVENT_TYPE_UNFLAGGED: NodeEventType
NODE_EVENT_TYPE_LEASE_LOST: NodeEventType
NODE_EVENT_TYPE_DRAINED: NodeEventType

class NodeSpec(_message.Message):
    __slots__ = ("node_id", "env", "region", "models", "gpu_model", "gpu_count", "vram_total_mb", "slots", "subclouds", "labels", "agent_version", "config_digest")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    VRAM_TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    env: str
    region: str
    models: _containers.RepeatedScalarFieldContainer[str]
    gpu_model: str
    gpu_count: int
    vram_total_mb: int
    slots: int
    subclouds: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    agent_version: str
    config_digest: str
    def __init__(self, node_id: _Optional[str] = ..., env: _Optional[str] = ..., region: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., gpu_model: _Optional[str] = ..., gpu_count: _Optional[int] = ..., vram_total_mb: _Optional[int] = ..., slots: _Optional[int] = ..., subclouds: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., agent_version: _Optional[str] = ..., config_digest: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("spec", "state", "liveness", "last_seen_time", "flags", "vram_free_mb", "running_jobs", "register_time", "boot_id", "seq", "leased_slots", "failure_score", "operator_paused", "subclouds")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    VRAM_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_TIME_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LEASED_SLOTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_SCORE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_PAUSED_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUDS_FIELD_NUMBER: _ClassVar[int]
    spec: NodeSpec
    state: NodeState
    liveness: Liveness
    last_seen_time: _timestamp_pb2.Timestamp
    flags: _containers.RepeatedCompositeFieldContainer[_flag_pb2.Flag]
    vram_free_mb: int
    running_jobs: int
    register_time: _timestamp_pb2.Timestamp
    boot_id: str
    seq: int
    leased_slots: int
    failure_score: float
    operator_paused: bool
    subclouds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, spec: _Optional[_Union[NodeSpec, _Mapping]] = ..., state: _Optional[_Union[NodeState, str]] = ..., liveness: _Optional[_Union[Liveness, str]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., flags: _Optional[_Iterable[_Union[_flag_pb2.Flag, _Mapping]]] = ..., vram_free_mb: _Optional[int] = ..., running_jobs: _Optional[int] = ..., register_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., boot_id: _Optional[str] = ..., seq: _Optional[int] = ..., leased_slots: _Optional[int] = ..., failure_score: _Optional[float] = ..., operator_paused: _Optional[bool] = ..., subclouds: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeEvent(_message.Message):
    __slots__ = ("resume_token", "type", "node_id", "env", "region", "event_time", "detail")
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    resume_token: str
    type: NodeEventType
    node_id: str
    env: str
    region: str
    event_time: _timestamp_pb2.Timestamp
    detail: str
    def __init__(self, resume_token: _Optional[str] = ..., type: _Optional[_Union[NodeEventType, str]] = ..., node_id: _Optional[str] = ..., env: _Optional[str] = ..., region: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...
