from livestate.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class GetNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("env", "model", "region", "liveness", "state", "subcloud", "page_size", "page_token")
    ENV_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    env: str
    model: str
    region: str
    liveness: _node_pb2.Liveness
    state: _node_pb2.NodeState
    subcloud: str
    page_size: int
    page_token: str
    def __init__(self, env: _Optional[str] = ..., model: _Optional[str] = ..., region: _Optional[str] = ..., liveness: _Optional[_Union[_node_pb2.Liveness, str]] = ..., state: _Optional[_Union[_node_pb2.NodeState, str]] = ..., subcloud: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_node_pb2.Node]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[_node_pb2.Node, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CountNodesRequest(_message.Message):
    __slots__ = ("env", "model", "region")
    ENV_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    env: str
    model: str
    region: str
    def __init__(self, env: _Optional[str] = ..., model: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class CountNodesResponse(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[ModelRegionCount]
    def __init__(self, counts: _Optional[_Iterable[_Union[ModelRegionCount, _Mapping]]] = ...) -> None: ...

class ModelRegionCount(_message.Message):
    __slots__ = ("model", "region", "online_nodes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ONLINE_NODES_FIELD_NUMBER: _ClassVar[int]
    model: str
    region: str
    online_nodes: int
    def __init__(self, model: _Optional[str] = ..., region: _Optional[str] = ..., online_nodes: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("env", "region", "types", "resume_token")
    ENV_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    env: str
    region: str
    types: _containers.RepeatedScalarFieldContainer[_node_pb2.NodeEventType]
    resume_token: str
    def __init__(self, env: _Optional[str] = ..., region: _Optional[str] = ..., types: _Optional[_Iterable[_Union[_node_pb2.NodeEventType, str]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _node_pb2.NodeEvent
    def __init__(self, event: _Optional[_Union[_node_pb2.NodeEvent, _Mapping]] = ...) -> None: ...
