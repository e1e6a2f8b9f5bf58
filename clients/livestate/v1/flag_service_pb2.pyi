import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from livestate.v1 import flag_pb2 as _flag_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlagAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLAG_ACTION_UNSPECIFIED: _ClassVar[FlagAction]
    FLAG_ACTION_SET: _ClassVar[FlagAction]
    FLAG_ACTION_CLEAR: _ClassVar[FlagAction]
FLAG_ACTION_UNSPECIFIED: FlagAction
FLAG_ACTION_SET: FlagAction
FLAG_ACTION_CLEAR: FlagAction

class SetFlagRequest(_message.Message):
    __slots__ = ("node_id", "kind", "ttl", "reason", "message", "start_time", "drain_deadline")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DRAIN_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    kind: _flag_pb2.FlagKind
    ttl: _duration_pb2.Duration
    reason: str
    message: str
    start_time: _timestamp_pb2.Timestamp
    drain_deadline: _duration_pb2.Duration
    def __init__(self, node_id: _Optional[str] = ..., kind: _Optional[_Union[_flag_pb2.FlagKind, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., drain_deadline: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SetFlagResponse(_message.Message):
    __slots__ = ("flag",)
    FLAG_FIELD_NUMBER: _ClassVar[int]
    flag: _flag_pb2.Flag
    def __init__(self, flag: _Optional[_Union[_flag_pb2.Flag, _Mapping]] = ...) -> None: ...

class ClearFlagRequest(_message.Message):
    __slots__ = ("node_id", "kind")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    kind: _flag_pb2.FlagKind
    def __init__(self, node_id: _Optional[str] = ..., kind: _Optional[_Union[_flag_pb2.FlagKind, str]] = ...) -> None: ...

class ClearFlagResponse(_message.Message):
    __slots__ = ("cleared",)
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    cleared: bool
    def __init__(self, cleared: _Optional[bool] = ...) -> None: ...

class ListFlagsRequest(_message.Message):
    __slots__ = ("node_id", "kind", "page_size", "page_token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    kind: _flag_pb2.FlagKind
    page_size: int
    page_token: str
    def __init__(self, node_id: _Optional[str] = ..., kind: _Optional[_Union[_flag_pb2.FlagKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFlagsResponse(_message.Message):
    __slots__ = ("flags", "next_page_token")
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    flags: _containers.RepeatedCompositeFieldContainer[_flag_pb2.Flag]
    next_page_token: str
    def __init__(self, flags: _Optional[_Iterable[_Union[_flag_pb2.Flag, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListFlagChangesRequest(_message.Message):
    __slots__ = ("node_id", "page_size", "page_token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    page_size: int
    page_token: str
    def __init__(self, node_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFlagChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[FlagChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[FlagChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FlagChange(_message.Message):
    __slots__ = ("change_id", "node_id", "kind", "action", "actor", "reason", "message", "expire_time", "change_time")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    node_id: str
    kind: _flag_pb2.FlagKind
    action: FlagAction
    actor: str
    reason: str
    message: str
    expire_time: _timestamp_pb2.Timestamp
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, change_id: _Optional[str] = ..., node_id: _Optional[str] = ..., kind: _Optional[_Union[_flag_pb2.FlagKind, str]] = ..., action: _Optional[_Union[FlagAction, str]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
