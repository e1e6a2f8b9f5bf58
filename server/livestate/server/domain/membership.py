"""Granted subcloud membership: where grants live and how a change reaches the claim script.

The truth is one global record per subcloud (Keys.grants), which every registration reads. The
claim script cannot read it (on a cluster it lives in another slot), so each grant or revocation
is copied into the control hash of the node's partition, and a registration brings the grants of
the subclouds the node lists into its new partition. Every copy carries the version grant.lua
gave the change, and a copy never replaces a newer one: a registration that read the grants just
before a revocation cannot undo it (grant_apply in lua/lib/control.lua).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from livestate.server.core.errors import Unavailable
from livestate.server.store import calls
from livestate.server.store.keys import Keys, Partition
from livestate.server.store.runtime import Runtime

AUDIT_MAXLEN = 100_000
GRANT, REVOKE, REFUSED = "grant", "revoke", "refused"
VERSION_FIELD = "#v"  # node ids never contain '#'


def change(
    rt: Runtime, subcloud: str, node_ids: Sequence[str], action: str, actor: str, reason: str
) -> calls.Granted:
    """Grants (or revokes) and waits until every node's partition has the change: after this
    returns, every Match that starts reads it."""
    meta = json.dumps({"actor": actor, "reason": reason})
    done = rt.scripts.call(calls.grant(rt, subcloud, node_ids, action=action, meta=meta))
    _copy_to_partitions(rt, subcloud, node_ids, done.version, action == GRANT)
    audit(rt, [(subcloud, node_id, action) for node_id in node_ids], actor, reason)
    return done


def _copy_to_partitions(
    rt: Runtime, subcloud: str, node_ids: Sequence[str], version: str, granted: bool
) -> None:
    """Writes the change where each node is, then looks again: a node that registered (or moved)
    meanwhile may have read the grants before the change; its registration set the locator
    before that read, so the second look finds it, and the copy written there outranks what it
    read. Unregistered nodes need nothing: their registration reads the truth."""
    todo = _locate(rt, node_ids)
    for _ in range(4):
        by_partition: dict[Partition, list[str]] = {}
        for node_id, partition in todo.items():
            if partition is not None:
                by_partition.setdefault(partition, []).append(node_id)
        for partition, nodes in by_partition.items():
            pk = rt.keys.partition(partition)
            rt.scripts.call(
                calls.membership(rt, pk, nodes, subcloud=subcloud, version=version, granted=granted)
            )
        now_at = _locate(rt, list(todo))
        todo = {n: p for n, p in now_at.items() if p is not None and p != todo[n]}
        if not todo:
            return
    raise Unavailable("nodes kept moving between partitions while their membership was written")


def _locate(rt: Runtime, node_ids: Sequence[str]) -> dict[str, Partition | None]:
    pipe = rt.client.pipeline(transaction=False)
    for node_id in node_ids:
        pipe.get(rt.keys.locator(node_id))
    labels = pipe.execute() if node_ids else []
    return {
        n: Partition.from_label(str(label)) if label else None
        for n, label in zip(node_ids, labels, strict=True)
    }


def queue_grant_reads(
    pipe: redis.client.Pipeline, keys: Keys, node_id: str, subclouds: Sequence[str]
) -> None:
    """What a registration needs of the grants: the node's grant and the last version, per
    subcloud it lists (`grants_read` decodes the replies)."""
    for subcloud in subclouds:
        pipe.hmget(keys.grants(subcloud), [node_id, VERSION_FIELD])


def grants_read(subclouds: Sequence[str], replies: Sequence[Sequence[str | None]]) -> dict[str, str]:
    """register.lua's memberships: per listed subcloud with a grant record, '<version>:1' when
    the node holds a grant, else '<last version>:0' (no grant as of that version)."""
    out = {}
    for subcloud, (entry, last) in zip(subclouds, replies, strict=True):
        if entry is not None:
            out[subcloud] = f"{json.loads(str(entry))['v']}:1"
        elif last is not None:
            out[subcloud] = f"{last}:0"
    return out


def audit(rt: Runtime, entries: Sequence[tuple[str, str, str]], actor: str, reason: str) -> None:
    """Appends (subcloud, node, action) entries to the membership audit trail."""
    if not entries:
        return
    pipe = rt.client.pipeline(transaction=False)
    for subcloud, node_id, action in entries:
        fields = {"sub": subcloud, "node": node_id, "action": action, "actor": actor, "reason": reason}
        pipe.xadd(rt.keys.membership_audit, fields, maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
    pipe.execute()
