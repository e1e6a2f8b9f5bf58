"""The flag audit trail: one capped stream of every SetFlag and ClearFlag (and every automatic
flag, such as a COOLDOWN from repeated failures), read back by ListFlagChanges."""

from __future__ import annotations

from livestate.server.store.runtime import Runtime

AUDIT_MAXLEN = 100_000


def append(
    rt: Runtime, node_id: str, kind: int, action: str, actor: str, reason: str, message: str, expire_ms: int
) -> None:
    """Appends one change to the audit trail and keeps the node on the ListFlags index."""
    pipe = rt.client.pipeline(transaction=False)
    entry = {
        "node": node_id,
        "kind": kind,
        "action": action,
        "actor": actor,
        "reason": reason,
        "message": message,
        "expire": expire_ms,
    }
    pipe.xadd(rt.keys.flag_audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
    pipe.zadd(rt.keys.flagged, {node_id: 0})
    pipe.execute()
