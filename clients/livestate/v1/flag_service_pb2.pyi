import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from livestate.v1 import flag_pb2 as _flag_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetFlagRequest(_message.Message):
    __slots__ = ("node_id", "kind", "ttl", "reason", "message")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    kind: _flag_pb2.FlagKind
    ttl: _duration_pb2.Duration
    reason: str
    message: str
    def __init__(self, node_id: _Optional[str] = ..., kind: _Optional[_Union[_flag_pb2.FlagKind, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

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
    __slots__ = ()
    def __init__(self) -> None: ...

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
