"""Subcloud policies: stored in one global hash (name -> JSON), read by Match on every call, so
each server process keeps them for a short, configurable time (`--subcloud-cache-ttl`). A change
to a policy is therefore visible to every server process within that time. A subcloud this
process knows no policy for is looked up afresh each time it is named, so a policy just created
(an isolated subcloud with granted membership, above all) is in force at once everywhere."""

from __future__ import annotations

from typing import Any

import redis
from google.protobuf import json_format

from livestate.server.keys import Keys
from livestate.server.snapshot import Snapshot
from livestate.v1 import subcloud_service_pb2 as pb


def membership_of(subcloud: pb.Subcloud) -> int:
    """The policy's membership, UNSPECIFIED resolved: granted when it isolates, else open."""
    if subcloud.membership != pb.SUBCLOUD_MEMBERSHIP_UNSPECIFIED:
        return subcloud.membership
    return pb.SUBCLOUD_MEMBERSHIP_GRANTED if subcloud.isolate else pb.SUBCLOUD_MEMBERSHIP_OPEN


def to_json(subcloud: pb.Subcloud) -> str:
    return json_format.MessageToJson(subcloud, preserving_proto_field_name=True, indent=None)


def from_json(raw: str) -> pb.Subcloud:
    return json_format.Parse(raw, pb.Subcloud())


class SubcloudCache:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: float) -> None:
        self._client = client
        self._key = keys.subcloud_policies
        self._policies: Snapshot[dict[str, pb.Subcloud]] = Snapshot({}, ttl)

    def get(self, name: str) -> pb.Subcloud | None:
        policy = self._all().get(name)
        if policy is None:
            raw = self._client.hget(self._key, name)
            if raw is not None:
                self.invalidate()  # a policy put since the last read: read them all again
                return from_json(str(raw))
        return policy

    def knows(self, name: str) -> bool:
        """Whether a policy of that name is held now (no round trip)."""
        return name in self._policies.value

    def isolated(self) -> set[str]:
        return {name for name, policy in self._all().items() if policy.isolate}

    def granted(self) -> set[str]:
        """Subclouds whose membership must be granted."""
        return {
            name
            for name, policy in self._all().items()
            if membership_of(policy) == pb.SUBCLOUD_MEMBERSHIP_GRANTED
        }

    def invalidate(self) -> None:
        self._policies.invalidate()

    def _all(self) -> dict[str, pb.Subcloud]:
        if not self._policies.due():
            return self._policies.value
        ticket = self._policies.begin()
        raw: dict[Any, Any] = dict(self._client.hgetall(self._key))
        return self._policies.store({str(name): from_json(str(value)) for name, value in raw.items()}, ticket)
