"""Time on the wire and from Redis, in one place: protobuf Timestamps and Durations from the
milliseconds and seconds the server works in, and "now" from a Redis TIME reply (every server
process takes the time from Redis, so they agree without trusting each other's clocks)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2, timestamp_pb2


def timestamp(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def duration_ms(ms: int) -> duration_pb2.Duration:
    """A Duration of `ms` milliseconds, never negative (clocks of two readings may disagree)."""
    d = duration_pb2.Duration()
    d.FromMilliseconds(max(0, ms))
    return d


def redis_now_ms(time_reply: Sequence[int | str]) -> int:
    """Milliseconds since the epoch, from a Redis TIME reply (seconds, microseconds)."""
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000
