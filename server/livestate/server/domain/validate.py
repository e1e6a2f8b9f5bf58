"""Field checks for requests. Each raises InvalidArgument naming the field (as a proto path) and
runs before any Redis call, so bad input never writes partial state.

Patterns are applied with fullmatch: `$` also matches before a final newline, so `match` with
`^...$` would let "gpu-1\n" through as a node id."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeGuard

from google.protobuf import duration_pb2, timestamp_pb2

from livestate.server.core.errors import InvalidArgument
from livestate.server.store.keys import Partition

ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MODEL_RE = re.compile(r"^[A-Za-z0-9._:/@+-]{1,256}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9._/-]{1,63}$")
# Printable ASCII without the characters our storage reserves (',' joins lists; braces are hash tags).
TEXT_RE = re.compile(r"^[\x20-\x7e]*$")
RESERVED_TEXT = set(",{}")

JOB_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A stream entry id as Redis writes it. Not int(): that also takes " 1", "1_0" and digits of
# other scripts, which Redis refuses (and a refusal from Redis would be an INTERNAL, not a 400).
STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_STREAM_ID_PART = 2**64 - 1

MAX_MODELS = 64
MAX_SUBCLOUDS = 32
MAX_LABELS = 64
MAX_SLOTS = 1024
MAX_GPUS = 1024
MAX_VRAM_MB = 1 << 40
MAX_RUNNING_JOBS = 1 << 20
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def identifier(value: str, field: str) -> str:
    """A node_id, boot_id or scheduler_id: required, 1-128 characters from [A-Za-z0-9._-]."""
    if not value:
        raise InvalidArgument(field, "required")
    if not ID_RE.fullmatch(value):
        raise InvalidArgument(field, "must be 1-128 characters from [A-Za-z0-9._-]")
    return value


def node_id(value: str, field: str = "node_id") -> str:
    return identifier(value, field)


def job_id(value: str, field: str = "job_id") -> str:
    if not value:
        raise InvalidArgument(field, "required")
    if not JOB_ID_RE.fullmatch(value):
        raise InvalidArgument(field, "must be 1-128 characters from [A-Za-z0-9._:-]")
    return value


def duration(value: duration_pb2.Duration, field: str, *, maximum: float, minimum: float = 0.01) -> float:
    """Seconds in a Duration; 0 when unset. Negative, malformed or out-of-range values are refused."""
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if value.nanos >= 1_000_000_000:
        raise InvalidArgument(field, "nanos must be below 1e9")
    seconds = value.seconds + value.nanos / 1e9
    if seconds == 0:
        return 0.0
    if seconds < minimum:
        raise InvalidArgument(field, f"must be at least {minimum:g} s")
    if seconds > maximum:
        raise InvalidArgument(field, f"must be at most {maximum:g} s")
    return seconds


# 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, the range google.protobuf.Timestamp allows.
_MIN_TS, _MAX_TS = -62_135_596_800, 253_402_300_799


def timestamp_ms(value: timestamp_pb2.Timestamp, field: str) -> int:
    """Milliseconds since the Unix epoch of a Timestamp; malformed or out-of-range values are
    refused (ToMilliseconds would raise on them)."""
    if not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(field, "nanos must be within [0, 1e9)")
    if not _MIN_TS <= value.seconds <= _MAX_TS:
        raise InvalidArgument(field, "must be within years 1..9999")
    return int(value.ToMilliseconds())


def boot_id(value: str, field: str = "boot_id") -> str:
    return identifier(value, field)


def name(value: str, field: str, *, required: bool) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, "required")
        return value
    if not NAME_RE.fullmatch(value):
        raise InvalidArgument(field, "must be 1-64 characters from [A-Za-z0-9._-]")
    return value


def model(value: str, field: str, *, required: bool) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, "required")
        return value
    if not MODEL_RE.fullmatch(value):
        raise InvalidArgument(field, "must be 1-256 characters from [A-Za-z0-9._:/@+-]")
    return value


def text(value: str, field: str, *, max_len: int) -> str:
    if len(value) > max_len:
        raise InvalidArgument(field, f"longer than {max_len} characters")
    if not TEXT_RE.fullmatch(value) or RESERVED_TEXT.intersection(value):
        raise InvalidArgument(field, "must be printable ASCII without ',', '{' or '}'")
    return value


def distinct(values: Iterable[str], field: str, *, max_items: int) -> list[str]:
    items = list(values)
    if len(items) > max_items:
        raise InvalidArgument(field, f"more than {max_items} entries")
    if len(set(items)) != len(items):
        raise InvalidArgument(field, "duplicate entries")
    return items


def labels(values: Mapping[str, str], field: str) -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise InvalidArgument(field, f"more than {MAX_LABELS} labels")
    for key, value in values.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise InvalidArgument(f"{field}[{key!r}]", "key must be 1-63 characters from [A-Za-z0-9._/-]")
        text(value, f"{field}[{key!r}]", max_len=256)
    return dict(values)


def at_most(value: int, limit: int, field: str) -> int:
    if value > limit:
        raise InvalidArgument(field, f"must be at most {limit}")
    return value


def enum_set(value: int, valid: Iterable[int], field: str, *, required: bool) -> int:
    if value == 0:
        if required:
            raise InvalidArgument(field, "required (UNSPECIFIED is not allowed)")
        return value
    if value not in set(valid):
        raise InvalidArgument(field, f"unknown value {value}")
    return value


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return at_most(value, MAX_PAGE_SIZE, field)


def is_stream_id(value: object) -> TypeGuard[str]:
    """Whether a value read from a token is a stream entry id Redis accepts ("<ms>-<seq>")."""
    if not isinstance(value, str):
        return False
    found = STREAM_ID_RE.fullmatch(value)
    return found is not None and all(int(part) <= MAX_STREAM_ID_PART for part in found.groups())


def is_partition_label(value: object) -> TypeGuard[str]:
    """Whether a value read from a token is a partition label exactly as the server writes them
    (from_label alone would take "a/b/01" or "a/b/-1", naming keys no partition has)."""
    if not isinstance(value, str) or value.count("/") != 2:
        return False
    env, region, _ = value.split("/")
    if not NAME_RE.fullmatch(env) or (region and not NAME_RE.fullmatch(region)):
        return False
    try:
        partition = Partition.from_label(value)
    except ValueError:
        return False
    return partition.shard >= 0 and partition.label == value
