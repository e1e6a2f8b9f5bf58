"""FlagService: each kind's effect on Match, on the node's heartbeat answer and on Node; TTLs;
flags on unregistered nodes; ListFlags; the audit trail; a race against Match."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from harness import Harness, error_field, wait_for
from livestate.v1 import flag_pb2
from livestate.v1 import flag_service_pb2 as fpb

BLOCKING = [
    flag_pb2.FLAG_KIND_PAUSE,
    flag_pb2.FLAG_KIND_FREEZE,
    flag_pb2.FLAG_KIND_SHADOW_BAN,
    flag_pb2.FLAG_KIND_QUARANTINE,
    flag_pb2.FLAG_KIND_DRAIN,
]


def _set(
    ls: Harness, node_id: str, kind: flag_pb2.FlagKind, actor: str = "alice", **fields: Any
) -> fpb.SetFlagResponse:
    response: fpb.SetFlagResponse = ls.flags.SetFlag(
        fpb.SetFlagRequest(node_id=node_id, kind=kind, **fields),
        timeout=5,
        metadata=[("livestate-actor", actor)],
    )
    return response


def _clear(ls: Harness, node_id: str, kind: flag_pb2.FlagKind) -> bool:
    return bool(ls.flags.ClearFlag(fpb.ClearFlagRequest(node_id=node_id, kind=kind), timeout=5).cleared)


@pytest.mark.parametrize("kind", BLOCKING)
def test_flag_keeps_node_out_of_matching_until_cleared(ls: Harness, kind: flag_pb2.FlagKind) -> None:
    ls.register("gpu-1")

    flag = _set(ls, "gpu-1", kind, reason="abuse").flag

    assert (flag.kind, flag.actor, flag.reason) == (kind, "alice", "abuse")
    assert ls.try_match("job-1") is None
    assert [f.kind for f in ls.get("gpu-1").flags] == [kind]
    assert _clear(ls, "gpu-1", kind)
    assert ls.try_match("job-2") == "gpu-1"
    assert not _clear(ls, "gpu-1", kind)  # idempotent


def test_cooldown_needs_a_ttl_and_lifts_by_itself(ls: Harness) -> None:
    ls.register("gpu-1")
    with pytest.raises(grpc.RpcError) as err:
        _set(ls, "gpu-1", flag_pb2.FLAG_KIND_COOLDOWN)
    assert error_field(err.value) == "ttl"

    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_COOLDOWN, ttl={"nanos": 300_000_000})

    assert ls.try_match("job-1") is None
    wait_for(lambda: ls.try_match("job-2") == "gpu-1", timeout=3)
    assert ls.get("gpu-1").flags == []
    wait_for(lambda: any(e["type"] == "5" and "expired" in e["detail"] for e in ls.events()), timeout=3)


def test_pause_is_shown_to_the_node_with_its_message(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_PAUSE, message="disk check, back soon")

    answer = ls.beat("gpu-1", boot, seq=1)

    assert answer.paused
    assert list(answer.notices) == ["disk check, back soon"]
    _clear(ls, "gpu-1", flag_pb2.FLAG_KIND_PAUSE)
    assert not ls.beat("gpu-1", boot, seq=2).paused


def test_maintenance_excludes_the_node_only_inside_its_window(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    start = {"seconds": int(time.time()) + 1, "nanos": 500_000_000}
    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_MAINTENANCE, message="maintenance at :30", start_time=start)

    assert list(ls.beat("gpu-1", boot, seq=1).notices) == ["maintenance at :30"]
    lease = ls.match("before-window").lease
    ls.release(lease)

    attempts = iter(range(1000))

    def excluded_now() -> bool:
        n = next(attempts)
        try:
            ls.release(ls.match(f"in-window-{n}").lease)
            return False
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
            return True

    with ls.beating({"gpu-1": boot}):
        wait_for(excluded_now, timeout=4)


def test_shadow_ban_is_invisible_to_the_node(ls: Harness) -> None:
    banned, _ = ls.register("banned")
    clean, _ = ls.register("clean")
    _set(ls, "banned", flag_pb2.FLAG_KIND_SHADOW_BAN)

    for seq in (1, 2):
        a = ls.beat("banned", banned, seq=seq)
        b = ls.beat("clean", clean, seq=seq)
        assert a.SerializeToString() == b.SerializeToString()
    _, registered = ls.register("banned", boot_id=banned)
    assert list(registered.node.flags) == []  # its own registration does not reveal it
    assert ls.try_match("job", exclude_node_ids=["clean"]) is None  # yet it is never matched


def test_flag_set_before_the_node_registers_waits_for_it(ls: Harness) -> None:
    _set(ls, "late-node", flag_pb2.FLAG_KIND_FREEZE, reason="fraud")
    listed = ls.flags.ListFlags(fpb.ListFlagsRequest(node_id="late-node"), timeout=5).flags
    assert [f.kind for f in listed] == [flag_pb2.FLAG_KIND_FREEZE]

    ls.register("late-node")

    assert ls.try_match("job") is None
    assert [f.reason for f in ls.get("late-node").flags] == ["fraud"]


def test_flags_follow_a_node_into_another_region(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1", region="eu")
    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_FREEZE)

    ls.register("gpu-1", boot_id=boot, region="us")

    assert ls.try_match("job") is None
    assert [f.kind for f in ls.get("gpu-1").flags] == [flag_pb2.FLAG_KIND_FREEZE]


def test_list_flags_filters_and_pages(ls: Harness) -> None:
    for i in range(5):
        ls.register(f"n{i}")
        _set(ls, f"n{i}", flag_pb2.FLAG_KIND_PAUSE if i % 2 else flag_pb2.FLAG_KIND_FREEZE)

    seen, token = [], ""
    while True:
        page = ls.flags.ListFlags(fpb.ListFlagsRequest(page_size=2, page_token=token), timeout=5)
        seen += [(f.node_id, f.kind) for f in page.flags]
        token = page.next_page_token
        if not token:
            break
    paused = ls.flags.ListFlags(fpb.ListFlagsRequest(kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5).flags

    assert sorted(seen) == sorted((f"n{i}", 1 if i % 2 else 2) for i in range(5))
    assert sorted(f.node_id for f in paused) == ["n1", "n3"]


def test_every_change_is_in_the_audit_trail(ls: Harness) -> None:
    ls.register("gpu-1")
    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_PAUSE, actor="alice", reason="check", ttl={"seconds": 60})
    _clear(ls, "gpu-1", flag_pb2.FLAG_KIND_PAUSE)
    _set(ls, "other", flag_pb2.FLAG_KIND_FREEZE, actor="bob")

    changes = ls.flags.ListFlagChanges(fpb.ListFlagChangesRequest(node_id="gpu-1"), timeout=5).changes

    assert [(c.action, c.kind) for c in changes] == [
        (fpb.FLAG_ACTION_CLEAR, flag_pb2.FLAG_KIND_PAUSE),
        (fpb.FLAG_ACTION_SET, flag_pb2.FLAG_KIND_PAUSE),
    ]
    assert (changes[1].actor, changes[1].reason) == ("alice", "check")
    assert changes[1].expire_time.ToMilliseconds() > changes[1].change_time.ToMilliseconds()
    everyone = ls.flags.ListFlagChanges(fpb.ListFlagChangesRequest(page_size=1), timeout=5)
    assert everyone.changes[0].actor == "bob" and everyone.next_page_token


def test_flag_changes_are_node_events(ls: Harness) -> None:
    ls.register("gpu-1")
    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_PAUSE)
    _clear(ls, "gpu-1", flag_pb2.FLAG_KIND_PAUSE)

    types = [(e["type"], e["detail"]) for e in ls.events() if e["type"] in ("4", "5")]
    assert types == [("4", "kind=1"), ("5", "kind=1")]


def test_no_match_started_after_a_pause_returned_gets_the_node(ls: Harness) -> None:
    boots = {f"n{i}": ls.register(f"n{i}")[0] for i in range(4)}
    windows: list[tuple[float, float]] = []  # PAUSE in force: from SetFlag returned to ClearFlag called
    matches: list[tuple[float, float, str]] = []  # (started, returned, node)
    lock = threading.Lock()
    stop = time.monotonic() + 3

    def toggler() -> None:
        while time.monotonic() < stop:
            _set(ls, "n0", flag_pb2.FLAG_KIND_PAUSE)
            paused_at = time.monotonic()
            time.sleep(0.02)
            cleared_at = time.monotonic()
            _clear(ls, "n0", flag_pb2.FLAG_KIND_PAUSE)
            with lock:
                windows.append((paused_at, cleared_at))
            time.sleep(0.01)

    def scheduler(w: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            started = time.monotonic()
            try:
                lease = ls.match(f"w{w}-{n}").lease
            except grpc.RpcError:
                continue
            returned = time.monotonic()
            with lock:
                matches.append((started, returned, lease.node_id))
            ls.release(lease)

    threads = [threading.Thread(target=toggler)] + [
        threading.Thread(target=scheduler, args=(w,)) for w in range(8)
    ]
    with ls.beating(boots):
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert len(windows) > 10 and len(matches) > 100
    assert any(node == "n0" for _, _, node in matches)  # n0 is matched between pauses
    # A Match that started after SetFlag returned, and answered before ClearFlag was called, ran
    # entirely while the flag was in force: it must not have picked the node.
    for started, returned, node in matches:
        if node == "n0":
            assert not any(a <= started and returned <= b for a, b in windows), "matched n0 while paused"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"node_id": "", "kind": 1}, "node_id"),
        ({"node_id": "n", "kind": 0}, "kind"),
        ({"node_id": "n", "kind": 99}, "kind"),
        ({"node_id": "n", "kind": 1, "ttl": {"seconds": -1}}, "ttl"),
        ({"node_id": "n", "kind": 1, "start_time": {"seconds": 1}}, "start_time"),
        ({"node_id": "n", "kind": 1, "reason": "a,b"}, "reason"),
        ({"node_id": "n", "kind": 1, "message": "x" * 1025}, "message"),
    ],
)
def test_set_flag_rejects_bad_input(ls: Harness, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ls.flags.SetFlag(fpb.SetFlagRequest(**fields), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == field
    assert ls.flags.ListFlags(fpb.ListFlagsRequest(), timeout=5).flags == []


def test_drain_lets_running_leases_finish_then_reports_drained(ls: Harness) -> None:
    ls.register("gpu-1", slots=2)
    leases = [ls.match(f"job-{i}").lease for i in range(2)]

    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_DRAIN)

    assert ls.try_match("job-3") is None
    ls.release(leases[0])
    assert not [e for e in ls.events() if e["type"] == "7"]
    ls.release(leases[1])
    assert [e["node"] for e in ls.events() if e["type"] == "7"] == ["gpu-1"]


def test_drain_deadline_revokes_the_leases_still_running(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")
    lease = ls.match("long-job", lease_ttl={"seconds": 600}).lease

    _set(ls, "gpu-1", flag_pb2.FLAG_KIND_DRAIN, drain_deadline={"nanos": 300_000_000})

    with ls.beating({"gpu-1": boot}):
        wait_for(
            lambda: any(e["type"] == "6" and "drain deadline" in e["detail"] for e in ls.events()), timeout=3
        )
    assert any(e["type"] == "7" for e in ls.events())
    with pytest.raises(grpc.RpcError) as err:
        ls.release(lease)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_operator_pause_from_the_agent_is_kept_apart_from_admin_flags(ls: Harness) -> None:
    boot, _ = ls.register("gpu-1")

    ls.beat("gpu-1", boot, seq=1, operator_paused=True)

    node = ls.get("gpu-1")
    assert node.operator_paused and list(node.flags) == []
    assert ls.try_match("job-1") is None
    ls.beat("gpu-1", boot, seq=2)
    assert ls.try_match("job-2") == "gpu-1"


@pytest.mark.parametrize(
    "start",
    [{"seconds": -62_135_596_801}, {"seconds": 253_402_300_800}, {"seconds": 1, "nanos": -1}],
)
def test_a_maintenance_window_outside_the_timestamp_range_is_refused(ls: Harness, start: Any) -> None:
    request = fpb.SetFlagRequest(node_id="gpu-1", kind=flag_pb2.FLAG_KIND_MAINTENANCE, start_time=start)
    with pytest.raises(grpc.RpcError) as info:
        ls.flags.SetFlag(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(info.value) == "start_time"
