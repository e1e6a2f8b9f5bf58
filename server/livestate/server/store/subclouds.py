"""Subcloud policies: stored in one global hash (name -> JSON), read by Match on every call, so
each server process keeps them for a short, configurable time (`--subcloud-cache-ttl`). A change
to a policy is therefore visible to every server process within that time. A subcloud this
process knows no policy for is looked up afresh each time it is named, so a policy just created
(an isolated subcloud with granted membership, above all) is in force at once everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis
from google.protobuf import json_format

from livestate.server.core.snapshot import Snapshot
from livestate.server.store.keys import Keys
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


@dataclasses.dataclass(frozen=True)
class Policies:
    """Every policy, and the two sets Match and reads ask for on every call, derived once per
    read of the policies rather than per call."""

    by_name: dict[str, pb.Subcloud]
    isolated: frozenset[str]
    granted: frozenset[str]

    @classmethod
    def of(cls, by_name: dict[str, pb.Subcloud]) -> Policies:
        return cls(
            by_name,
            frozenset(n for n, p in by_name.items() if p.isolate),
            frozenset(n for n, p in by_name.items() if membership_of(p) == pb.SUBCLOUD_MEMBERSHIP_GRANTED),
        )


class SubcloudCache:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: float) -> None:
        self._client = client
        self._key = keys.subcloud_policies
        self._policies: Snapshot[Policies] = Snapshot(Policies.of({}), ttl)

    def get(self, name: str) -> pb.Subcloud | None:
        policy = self._all().by_name.get(name)
        if policy is None:
            raw = self._client.hget(self._key, name)
            if raw is not None:
                self.invalidate()  # a policy put since the last read: read them all again
                return from_json(str(raw))
        return policy

    def knows(self, name: str) -> bool:
        """Whether a policy of that name is held now (no round trip)."""
        return name in self._policies.value.by_name

    def isolated(self) -> frozenset[str]:
        return self._all().isolated

    def granted(self) -> frozenset[str]:
        """Subclouds whose membership must be granted."""
        return self._all().granted

    def invalidate(self) -> None:
        self._policies.invalidate()

    def _all(self) -> Policies:
        if not self._policies.due():
            return self._policies.value
        ticket = self._policies.begin()
        raw: dict[Any, Any] = dict(self._client.hgetall(self._key))
        return self._policies.store(Policies.of({str(n): from_json(str(v)) for n, v in raw.items()}), ticket)
