"""The node record: how a NodeSpec and live state are laid out in the node's Redis hash, and how
a hash becomes a `Node` again. Field names here are the ones the Lua scripts read and write.

Fields are short and flat so a record stays a small listpack: spec fields, one `l:<key>` field per
label, lists comma-joined (validation forbids commas in their items).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence

from livestate.server.core.clock import timestamp
from livestate.server.core.config import Config
from livestate.v1 import flag_pb2, node_pb2

LIVE_ONLINE = node_pb2.LIVENESS_ONLINE
LIVE_SUSPECT = node_pb2.LIVENESS_SUSPECT
LIVE_OFFLINE = node_pb2.LIVENESS_OFFLINE
LABEL_PREFIX = "l:"
GRANT_PREFIX = "g:"


def spec_fields(spec: node_pb2.NodeSpec) -> list[str]:
    """Flat field/value pairs of a spec (ARGV tail of register.lua), models and subclouds apart."""
    pairs = [
        ("env", spec.env),
        ("region", spec.region),
        ("gpu", spec.gpu_model),
        ("gpus", str(spec.gpu_count)),
        ("vram", str(spec.vram_total_mb)),
        ("slots", str(spec.slots or 1)),
        ("agent", spec.agent_version),
        ("digest", spec.config_digest),
        *((LABEL_PREFIX + key, spec.labels[key]) for key in sorted(spec.labels)),
    ]
    return [item for pair in pairs for item in pair]


def joined(items: list[str]) -> str:
    return ",".join(items)


def _split(value: str | None) -> list[str]:
    return [item for item in (value or "").split(",") if item]


@dataclasses.dataclass(frozen=True)
class Hearing:
    """What a partition's silence is measured against: the epoch (no node is silent for longer
    than the state has existed) and the last outage forgiven [ostart, oend). The rule of
    `hearing` and `silence` in lua/lib/hearing.lua; test_liveness checks that both agree."""

    epoch_ms: int
    ostart_ms: int = 0
    oend_ms: int = 0

    @classmethod
    def read(cls, meta: Sequence[str | None], now_ms: int, epoch_ms: int, config: Config) -> Hearing:
        """From HMGET <p>:meta pulse ostart oend, with an outage that no script has recorded yet
        (no sweep for longer than sweep_gap) applied as the next script will record it."""
        pulse, ostart, oend = (int(v) if v is not None else None for v in meta)
        hearing = cls(epoch_ms, ostart or 0, oend or 0)
        if (
            pulse is not None
            and now_ms - pulse > config.sweep_gap * 1000
            and now_ms - hearing.oend_ms > config.offline_after * 1000
        ):
            return cls(epoch_ms, pulse, now_ms)
        return hearing

    def silence(self, seen_ms: int, now_ms: int) -> int:
        seen = max(seen_ms, self.epoch_ms)
        if seen >= self.oend_ms:
            return now_ms - seen
        if seen >= self.ostart_ms:
            return now_ms - self.oend_ms
        return (self.ostart_ms - seen) + (now_ms - self.oend_ms)


def liveness(record: Mapping[str, str], now_ms: int, hearing: Hearing, config: Config) -> int:
    """Liveness as of `now_ms`, the same rule the sweeper applies, so reads are right even
    before a sweep has run."""
    if record.get("live") == str(LIVE_OFFLINE):
        return LIVE_OFFLINE
    silent_ms = hearing.silence(int(record.get("seen", "0")), now_ms)
    if silent_ms > config.offline_after * 1000:
        return LIVE_OFFLINE
    if silent_ms > config.suspect_after * 1000:
        return LIVE_SUSPECT
    return LIVE_ONLINE


def flags_from_control(node_id: str, control: Mapping[str, str], now_ms: int) -> list[flag_pb2.Flag]:
    """Flags in force, from the node's control hash ('<kind>' = expiry ms or 0, '<kind>:meta' =
    JSON with reason, message, actor, create_ms). Expired flags are not shown."""
    flags = []
    for kind in sorted((k for k in control if k.isdigit()), key=int):
        expire_ms = int(control[kind])
        if expire_ms and expire_ms <= now_ms:
            continue
        meta = json.loads(control.get(f"{kind}:meta", "{}"))
        flag = flag_pb2.Flag(
            node_id=node_id,
            kind=flag_pb2.FlagKind.Name(int(kind)),
            reason=meta.get("reason", ""),
            message=meta.get("message", ""),
            actor=meta.get("actor", ""),
        )
        if expire_ms:
            flag.expire_time.FromMilliseconds(expire_ms)
        if "create_ms" in meta:
            flag.create_time.FromMilliseconds(int(meta["create_ms"]))
        flags.append(flag)
    return flags


def failure_score(control: Mapping[str, str], now_ms: int, config: Config) -> float:
    """The decaying failure score as of now (release.lua stores it as of its last change)."""
    score = float(control.get("score", "0"))
    since = int(control.get("score_t", str(now_ms)))
    return float(score * 2 ** (-(now_ms - since) / (config.failure_half_life * 1000)))


def grant_field(subcloud: str) -> str:
    """The control-hash field holding the node's membership of `subcloud`: '<version>:1' while
    granted, '<version>:0' once revoked (grant_apply in lua/lib/control.lua)."""
    return GRANT_PREFIX + subcloud


def is_granted(value: str | None) -> bool:
    """Whether a membership value (a control-hash field, or a grant as a registration read it)
    says granted."""
    return bool(value) and str(value).endswith(":1")


def held_subclouds(listed: Sequence[str], control: Mapping[str, str], granted: Collection[str]) -> list[str]:
    """Of the subclouds a node lists, those it is a member of: the open ones, and those among
    `granted` (membership must be granted) whose grant its control hash holds (member in
    lua/lib/matching.lua)."""
    return [s for s in listed if s not in granted or is_granted(control.get(grant_field(s)))]


def node_from_record(
    node_id: str,
    record: Mapping[str, str],
    now_ms: int,
    hearing: Hearing,
    config: Config,
    control: Mapping[str, str] | None = None,
    *,
    granted: Collection[str],
) -> node_pb2.Node:
    spec = node_pb2.NodeSpec(
        node_id=node_id,
        env=record.get("env", ""),
        region=record.get("region", ""),
        models=_split(record.get("models")),
        gpu_model=record.get("gpu", ""),
        gpu_count=int(record.get("gpus", "0")),
        vram_total_mb=int(record.get("vram", "0")),
        slots=int(record.get("slots", "1")),
        subclouds=_split(record.get("subs")),
        labels={k[len(LABEL_PREFIX) :]: v for k, v in record.items() if k.startswith(LABEL_PREFIX)},
        agent_version=record.get("agent", ""),
        config_digest=record.get("digest", ""),
    )
    return node_pb2.Node(
        spec=spec,
        state=int(record.get("state", "0")),  # type: ignore[arg-type]
        liveness=liveness(record, now_ms, hearing, config),  # type: ignore[arg-type]
        last_seen_time=timestamp(int(record.get("seen", "0"))),
        vram_free_mb=int(record.get("vfree", "0")),
        running_jobs=int(record.get("jobs", "0")),
        register_time=timestamp(int(record.get("reg", "0"))),
        boot_id=record.get("boot", ""),
        seq=int(record.get("seq", "0")),
        leased_slots=int(record.get("used", "0")),
        operator_paused=record.get("opause") == "1",
        flags=flags_from_control(node_id, control or {}, now_ms),
        failure_score=failure_score(control or {}, now_ms, config),
        subclouds=held_subclouds(spec.subclouds, control or {}, granted),
    )
