"""The gRPC service config the helpers' channels use: which calls the client library retries.

Only calls that are safe to send twice are retried, and only on UNAVAILABLE (the server or its
Redis could not serve; a copy that did run is harmless):
- Match and Enqueue carry their job_id, which the server checks: a repeat answers the lease or
  position the first one got (a Match without a job_id is refused INVALID_ARGUMENT, never sent
  twice);
- Renew sets the expiry from now, Release and Fail answer a repeat as they answered the first
  (the lease record stays as a tombstone), Cancel of a cancelled job is NOT_FOUND;
- every read (GetNode, ListNodes, CountNodes, ListFlags, GetQueue, ...) and the flag and subcloud
  writes, which set a value rather than add to one.
DEADLINE_EXCEEDED is never retried: the caller's deadline is spent.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

RETRIED_SERVICES = (
    "livestate.v1.MatchService",
    "livestate.v1.QueueService",
    "livestate.v1.NodeService",
    "livestate.v1.FlagService",
    "livestate.v1.SubcloudService",
)

SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": service} for service in RETRIED_SERVICES],
                "retryPolicy": RETRY_POLICY,
            }
        ]
    }
)

CHANNEL_OPTIONS = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]


class ChannelUser:
    """What the helpers share: a channel (made here, with the retry policy, from "host:port";
    or the caller's own, which the caller closes), per-call options, and closing."""

    def __init__(
        self, target: str | grpc.Channel, call_timeout: float, metadata: list[tuple[str, str]] | None
    ) -> None:
        self._owns_channel = isinstance(target, str)
        self.channel = (
            grpc.insecure_channel(target, options=CHANNEL_OPTIONS) if isinstance(target, str) else target
        )
        self.call_timeout = call_timeout
        self.metadata = metadata or []

    def _opts(self, timeout: float | None = None) -> dict[str, Any]:
        return {"timeout": self.call_timeout if timeout is None else timeout, "metadata": self.metadata}

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
