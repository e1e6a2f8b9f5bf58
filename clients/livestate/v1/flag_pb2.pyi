import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlagKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLAG_KIND_UNSPECIFIED: _ClassVar[FlagKind]
    FLAG_KIND_PAUSE: _ClassVar[FlagKind]
    FLAG_KIND_FREEZE: _ClassVar[FlagKind]
    FLAG_KIND_SHADOW_BAN: _ClassVar[FlagKind]
    FLAG_KIND_QUARANTINE: _ClassVar[FlagKind]
    FLAG_KIND_COOLDOWN: _ClassVar[FlagKind]
    FLAG_KIND_MAINTENANCE: _ClassVar[FlagKind]
    FLAG_KIND_DRAIN: _ClassVar[FlagKind]
FLAG_KIND_UNSPECIFIED: FlagKind
FLAG_KIND_PAUSE: FlagKind
FLAG_KIND_FREEZE: FlagKind
FLAG_KIND_SHADOW_BAN: FlagKind
FLAG_KIND_QUARANTINE: FlagKind
FLAG_KIND_COOLDOWN: FlagKind
FLAG_KIND_MAINTENANCE: FlagKind
FLAG_KIND_DRAIN: FlagKind

class Flag(_message.Message):
    __slots__ = ("node_id", "kind", "reason", "message", "expire_time", "actor", "create_time", "start_time")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    kind: FlagKind
    reason: str
    message: str
    expire_time: _timestamp_pb2.Timestamp
    actor: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., kind: _Optional[_Union[FlagKind, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
