"""Subcloud policies: stored in one global hash (name -> JSON), read by Match on every call, so
each server process keeps them for a short, configurable time (`--subcloud-cache-ttl`). A Put is
therefore visible to every server process within that time."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from google.protobuf import json_format

from livestate.server.keys import Keys
from livestate.v1 import subcloud_service_pb2 as pb


def to_json(subcloud: pb.Subcloud) -> str:
    return json_format.MessageToJson(subcloud, preserving_proto_field_name=True, indent=None)


def from_json(raw: str) -> pb.Subcloud:
    return json_format.Parse(raw, pb.Subcloud())


class SubcloudCache:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: float) -> None:
        self._client = client
        self._key = keys.subcloud_policies
        self._ttl = ttl
        self._lock = threading.Lock()
        self._policies: dict[str, pb.Subcloud] = {}
        self._read_at = -1.0

    def get(self, name: str) -> pb.Subcloud | None:
        return self._all().get(name)

    def isolated(self) -> set[str]:
        return {name for name, policy in self._all().items() if policy.isolate}

    def invalidate(self) -> None:
        with self._lock:
            self._read_at = -1.0

    def _all(self) -> dict[str, pb.Subcloud]:
        with self._lock:
            if time.monotonic() - self._read_at <= self._ttl:
                return self._policies
        raw: dict[Any, Any] = dict(self._client.hgetall(self._key))
        policies = {str(name): from_json(str(value)) for name, value in raw.items()}
        with self._lock:
            self._policies, self._read_at = policies, time.monotonic()
        return policies
