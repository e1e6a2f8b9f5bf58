import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutSubcloudRequest(_message.Message):
    __slots__ = ("subcloud",)
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    subcloud: Subcloud
    def __init__(self, subcloud: _Optional[_Union[Subcloud, _Mapping]] = ...) -> None: ...

class PutSubcloudResponse(_message.Message):
    __slots__ = ("subcloud",)
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    subcloud: Subcloud
    def __init__(self, subcloud: _Optional[_Union[Subcloud, _Mapping]] = ...) -> None: ...

class GetSubcloudRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSubcloudResponse(_message.Message):
    __slots__ = ("subcloud",)
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    subcloud: Subcloud
    def __init__(self, subcloud: _Optional[_Union[Subcloud, _Mapping]] = ...) -> None: ...

class ListSubcloudsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSubcloudsResponse(_message.Message):
    __slots__ = ("subclouds",)
    SUBCLOUDS_FIELD_NUMBER: _ClassVar[int]
    subclouds: _containers.RepeatedCompositeFieldContainer[Subcloud]
    def __init__(self, subclouds: _Optional[_Iterable[_Union[Subcloud, _Mapping]]] = ...) -> None: ...

class DeleteSubcloudRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteSubcloudResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class Subcloud(_message.Message):
    __slots__ = ("name", "isolate", "allowed_models", "allowed_regions", "min_vram_mb", "allowed_gpu_models", "banned_node_ids", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_REGIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_VRAM_MB_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_GPU_MODELS_FIELD_NUMBER: _ClassVar[int]
    BANNED_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    isolate: bool
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    allowed_regions: _containers.RepeatedScalarFieldContainer[str]
    min_vram_mb: int
    allowed_gpu_models: _containers.RepeatedScalarFieldContainer[str]
    banned_node_ids: _containers.RepeatedScalarFieldContainer[str]
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., isolate: _Optional[bool] = ..., allowed_models: _Optional[_Iterable[str]] = ..., allowed_regions: _Optional[_Iterable[str]] = ..., min_vram_mb: _Optional[int] = ..., allowed_gpu_models: _Optional[_Iterable[str]] = ..., banned_node_ids: _Optional[_Iterable[str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
