import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MembershipAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBERSHIP_ACTION_UNSPECIFIED: _ClassVar[MembershipAction]
    MEMBERSHIP_ACTION_GRANT: _ClassVar[MembershipAction]
    MEMBERSHIP_ACTION_REVOKE: _ClassVar[MembershipAction]
    MEMBERSHIP_ACTION_REFUSED: _ClassVar[MembershipAction]

class SubcloudMembership(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBCLOUD_MEMBERSHIP_UNSPECIFIED: _ClassVar[SubcloudMembership]
    SUBCLOUD_MEMBERSHIP_OPEN: _ClassVar[SubcloudMembership]
    SUBCLOUD_MEMBERSHIP_GRANTED: _ClassVar[SubcloudMembership]
MEMBERSHIP_ACTION_UNSPECIFIED: MembershipAction
MEMBERSHIP_ACTION_GRANT: MembershipAction
MEMBERSHIP_ACTION_REVOKE: MembershipAction
MEMBERSHIP_ACTION_REFUSED: MembershipAction
SUBCLOUD_MEMBERSHIP_UNSPECIFIED: SubcloudMembership
SUBCLOUD_MEMBERSHIP_OPEN: SubcloudMembership
SUBCLOUD_MEMBERSHIP_GRANTED: SubcloudMembership

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

class AddSubcloudMembersRequest(_message.Message):
    __slots__ = ("subcloud", "node_ids", "reason")
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subcloud: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, subcloud: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class AddSubcloudMembersResponse(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: int
    def __init__(self, added: _Optional[int] = ...) -> None: ...

class RemoveSubcloudMembersRequest(_message.Message):
    __slots__ = ("subcloud", "node_ids", "reason")
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subcloud: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, subcloud: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RemoveSubcloudMembersResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class ListSubcloudMembersRequest(_message.Message):
    __slots__ = ("subcloud", "page_size", "page_token")
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subcloud: str
    page_size: int
    page_token: str
    def __init__(self, subcloud: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSubcloudMembersResponse(_message.Message):
    __slots__ = ("members", "next_page_token")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[SubcloudMember]
    next_page_token: str
    def __init__(self, members: _Optional[_Iterable[_Union[SubcloudMember, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListMembershipChangesRequest(_message.Message):
    __slots__ = ("subcloud", "node_id", "page_size", "page_token")
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subcloud: str
    node_id: str
    page_size: int
    page_token: str
    def __init__(self, subcloud: _Optional[str] = ..., node_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMembershipChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[MembershipChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[MembershipChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SubcloudMember(_message.Message):
    __slots__ = ("node_id", "actor", "reason", "grant_time")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GRANT_TIME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    actor: str
    reason: str
    grant_time: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., grant_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MembershipChange(_message.Message):
    __slots__ = ("change_id", "subcloud", "node_id", "action", "actor", "reason", "change_time")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    subcloud: str
    node_id: str
    action: MembershipAction
    actor: str
    reason: str
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, change_id: _Optional[str] = ..., subcloud: _Optional[str] = ..., node_id: _Optional[str] = ..., action: _Optional[_Union[MembershipAction, str]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Subcloud(_message.Message):
    __slots__ = ("name", "isolate", "allowed_models", "allowed_regions", "min_vram_mb", "allowed_gpu_models", "banned_node_ids", "update_time", "membership")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_REGIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_VRAM_MB_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_GPU_MODELS_FIELD_NUMBER: _ClassVar[int]
    BANNED_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    name: str
    isolate: bool
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    allowed_regions: _containers.RepeatedScalarFieldContainer[str]
    min_vram_mb: int
    allowed_gpu_models: _containers.RepeatedScalarFieldContainer[str]
    banned_node_ids: _containers.RepeatedScalarFieldContainer[str]
    update_time: _timestamp_pb2.Timestamp
    membership: SubcloudMembership
    def __init__(self, name: _Optional[str] = ..., isolate: _Optional[bool] = ..., allowed_models: _Optional[_Iterable[str]] = ..., allowed_regions: _Optional[_Iterable[str]] = ..., min_vram_mb: _Optional[int] = ..., allowed_gpu_models: _Optional[_Iterable[str]] = ..., banned_node_ids: _Optional[_Iterable[str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., membership: _Optional[_Union[SubcloudMembership, str]] = ...) -> None: ...
