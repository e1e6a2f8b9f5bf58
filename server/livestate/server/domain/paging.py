"""Page and resume tokens, one codec for every listing and stream: a token is a JSON value in
unpadded URL-safe base64. What it carries goes into Redis range bounds, key names and XREAD
positions, so each caller says exactly what a token it issued holds (`valid`), and anything else
is INVALID_ARGUMENT, naming the field, here rather than a Redis error later. (No signature: the
server trusts nothing in a token it has not checked as strictly as it writes it.)"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import redis

from livestate.server.core.errors import InvalidArgument
from livestate.server.domain import validate

NOT_OURS = "not a token this server issued"
# Audit entries one listing call reads at most while filtering (a filter that matches little
# still answers in bounded time, with a token to go on from).
AUDIT_SCAN = 5_000


def encode(value: Any) -> str:
    """The token carrying `value` ("" for None or "": no further page)."""
    if value is None or value == "":
        return ""
    return base64.urlsafe_b64encode(json.dumps(value, sort_keys=True).encode()).decode().rstrip("=")


def decode(token: str, valid: Callable[[Any], bool], field: str = "page_token") -> Any:
    """The value a token carries (None for an empty token: the first page)."""
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as exc:  # "[[[[..."
        raise InvalidArgument(field, NOT_OURS) from exc
    if not valid(value):
        raise InvalidArgument(field, NOT_OURS)
    return value


def after_node(value: Any) -> bool:
    """Listings that page by node id."""
    return isinstance(value, str) and validate.ID_RE.fullmatch(value) is not None


def before_entry(value: Any) -> bool:
    """Audit trails page by stream entry id, read newest first. 0-0 has nothing before it:
    XREVRANGE refuses it as an exclusive bound, and no entry has it, so no page ends on it."""
    return validate.is_stream_id(value) and value != "0-0"


@dataclasses.dataclass(frozen=True)
class AuditPage:
    """Entries of an audit trail, newest first, as (entry id, fields)."""

    entries: list[tuple[str, dict[str, str]]]
    next_page_token: str


def audit_page(
    client: redis.Redis, stream: str, token: str, page_size: int, keep: Callable[[dict[str, str]], bool]
) -> AuditPage:
    """One page of a capped audit stream, newest first, of the entries `keep` accepts, from where
    `token` (issued by the previous page) left off."""
    before = decode(token, before_entry) or ""
    entries: list[tuple[str, dict[str, str]]] = []
    cursor, scanned = (f"({before}" if before else "+"), 0
    while len(entries) < page_size and scanned < AUDIT_SCAN:
        batch = client.xrevrange(stream, cursor, "-", count=page_size)
        if not batch:
            return AuditPage(entries, "")
        for raw_id, raw_fields in batch:
            scanned += 1
            entry_id = str(raw_id)
            fields = {str(k): str(v) for k, v in (raw_fields or {}).items()}
            cursor = f"({entry_id}"
            if keep(fields):
                entries.append((entry_id, fields))
                if len(entries) == page_size:
                    break
    return AuditPage(entries, encode(cursor[1:]))
