"""Page tokens: what a listing hands back to go on from. A token carries a value that goes into
a Redis range bound, so it must be exactly what the server issues: anything else is
INVALID_ARGUMENT here, not a Redis error later."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from livestate.server import validate
from livestate.server.errors import InvalidArgument


def encode(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=") if value else ""


def decode(token: str, valid: Callable[[str], bool]) -> str:
    """The value a page token carries, "" for the first page."""
    if not token:
        return ""
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument("page_token", "not a token this server issued") from exc
    if not valid(value):
        raise InvalidArgument("page_token", "not a token this server issued")
    return value


def after_node(value: str) -> bool:
    """Listings that page by node id."""
    return validate.ID_RE.fullmatch(value) is not None


def before_entry(value: str) -> bool:
    """Audit trails page by stream entry id, read newest first. 0-0 has nothing before it:
    XREVRANGE refuses it as an exclusive bound, and no entry has it, so no page ends on it."""
    return validate.is_stream_id(value) and value != "0-0"
