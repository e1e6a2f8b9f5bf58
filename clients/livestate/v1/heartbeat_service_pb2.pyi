import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from livestate.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("node", "boot_id", "state", "vram_free_mb", "running_jobs")
    NODE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VRAM_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.NodeSpec
    boot_id: str
    state: _node_pb2.NodeState
    vram_free_mb: int
    running_jobs: int
    def __init__(self, node: _Optional[_Union[_node_pb2.NodeSpec, _Mapping]] = ..., boot_id: _Optional[str] = ..., state: _Optional[_Union[_node_pb2.NodeState, str]] = ..., vram_free_mb: _Optional[int] = ..., running_jobs: _Optional[int] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("heartbeat_interval", "node", "restarted", "suspect_after", "offline_after")
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    RESTARTED_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_AFTER_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_AFTER_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval: _duration_pb2.Duration
    node: _node_pb2.Node
    restarted: bool
    suspect_after: _duration_pb2.Duration
    offline_after: _duration_pb2.Duration
    def __init__(self, heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., restarted: _Optional[bool] = ..., suspect_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., offline_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "boot_id", "seq", "state", "vram_free_mb", "running_jobs", "operator_paused")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VRAM_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_PAUSED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    boot_id: str
    seq: int
    state: _node_pb2.NodeState
    vram_free_mb: int
    running_jobs: int
    operator_paused: bool
    def __init__(self, node_id: _Optional[str] = ..., boot_id: _Optional[str] = ..., seq: _Optional[int] = ..., state: _Optional[_Union[_node_pb2.NodeState, str]] = ..., vram_free_mb: _Optional[int] = ..., running_jobs: _Optional[int] = ..., operator_paused: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("resync_required", "next_interval", "paused", "notices", "seq")
    RESYNC_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    NEXT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    resync_required: bool
    next_interval: _duration_pb2.Duration
    paused: bool
    notices: _containers.RepeatedScalarFieldContainer[str]
    seq: int
    def __init__(self, resync_required: _Optional[bool] = ..., next_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., paused: _Optional[bool] = ..., notices: _Optional[_Iterable[str]] = ..., seq: _Optional[int] = ...) -> None: ...

class BeatRequest(_message.Message):
    __slots__ = ("node_id", "boot_id", "seq", "state", "vram_free_mb", "running_jobs", "operator_paused")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VRAM_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_PAUSED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    boot_id: str
    seq: int
    state: _node_pb2.NodeState
    vram_free_mb: int
    running_jobs: int
    operator_paused: bool
    def __init__(self, node_id: _Optional[str] = ..., boot_id: _Optional[str] = ..., seq: _Optional[int] = ..., state: _Optional[_Union[_node_pb2.NodeState, str]] = ..., vram_free_mb: _Optional[int] = ..., running_jobs: _Optional[int] = ..., operator_paused: _Optional[bool] = ...) -> None: ...

class BeatResponse(_message.Message):
    __slots__ = ("resync_required", "next_interval", "paused", "notices", "seq")
    RESYNC_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    NEXT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    resync_required: bool
    next_interval: _duration_pb2.Duration
    paused: bool
    notices: _containers.RepeatedScalarFieldContainer[str]
    seq: int
    def __init__(self, resync_required: _Optional[bool] = ..., next_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., paused: _Optional[bool] = ..., notices: _Optional[_Iterable[str]] = ..., seq: _Optional[int] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("node_id", "boot_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    boot_id: str
    def __init__(self, node_id: _Optional[str] = ..., boot_id: _Optional[str] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
