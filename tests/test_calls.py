"""Every Lua script has one typed wrapper in calls.py, and each wrapper passes exactly the KEYS and
ARGV its script's header declares."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import redis

from livestate.server import Config
from livestate.server.store import calls
from livestate.server.store.keys import Partition
from livestate.server.store.runtime import Runtime
from livestate.server.store.scripts import SCRIPT_NAMES, ScriptCall, read_lua

# A client that is never used: building a call reads config and keys only.
RT = Runtime.build(Config(), redis.Redis(host="127.0.0.1", port=1))
PK = RT.keys.partition(Partition("prod", "eu"))
LEASE = f"{PK.partition.label}/0000000a"
A = calls.Assignment("j", LEASE, 1, 2, "n", "")

SAMPLES: dict[str, Callable[[], ScriptCall[Any]]] = {
    "register": lambda: calls.register(
        RT,
        PK,
        "n",
        boot_id="b",
        state=1,
        vram_free_mb=1,
        models="m",
        subclouds="",
        running_jobs=0,
        flags={},
        grants={},
        spec_fields=[],
    ),
    "beat": lambda: calls.beat(
        RT, PK, "n", boot_id="b", seq=1, state=1, vram_free_mb=1, running_jobs=0, operator_paused=False
    ),
    "deregister": lambda: calls.deregister(RT, PK, "n", boot_id="b", retention_ms=1),
    "forget": lambda: calls.forget(RT, PK, "n"),
    "sweep": lambda: calls.sweep(
        RT, PK, retention_ms=1, offline_ttl_ms=1, limit=1, refresh=False, outbox_age_ms=1
    ),
    "match": lambda: calls.match(
        RT,
        PK,
        "j",
        model="m",
        min_vram_mb=0,
        gpu_models=(),
        subcloud="",
        labels={},
        excluded=(),
        lease_ttl_ms=1,
        policy=1,
        cursor="",
        seed=1,
        scheduler="",
        wait_ms=0,
        priority=0,
        isolated=(),
        granted=(),
    ),
    "renew": lambda: calls.renew(RT, LEASE, token=1, ttl_ms=1),
    "release": lambda: calls.release(RT, LEASE, token=1, failed=False, reason=""),
    "settle": lambda: calls.settle(RT, A),
    "unwait": lambda: calls.unwait(RT, PK, "j"),
    "setflag": lambda: calls.setflag(
        RT, PK, "n", kind=1, action="set", expire_ms=0, start_ms=0, meta="{}", deadline_ms=0
    ),
    "grant": lambda: calls.grant(RT, "s", [], action="grant", meta="{}"),
    "membership": lambda: calls.membership(RT, PK, ["n"], subcloud="s", version="1", granted=True),
    "hold": lambda: calls.hold(RT.keys.sweeper, token="t", lease_ms=1),
    "del_if_equal": lambda: calls.del_if_equal(RT.keys.sweeper, "t"),
    "epoch": lambda: calls.epoch(RT.keys.epoch, run_id="", mark=0, advance=False),
}


def _header(name: str) -> tuple[int | None, int, bool]:
    """(KEYS declared, or None for KEYS[1..n]; the last fixed ARGV; whether more ARGV may follow)."""
    head = "\n".join(line for line in read_lua(name).splitlines() if line.startswith("--"))
    keys = [int(k) for k in re.findall(r"^-- KEYS\[(\d+)\]", head, re.M)]
    argv = [int(a) for a in re.findall(r"^-- ARGV\[(?:\d+\.\.)?(\d+)\]", head, re.M)]
    variadic = re.search(r"^-- ARGV\[(\d+)\.\.\]", head, re.M)
    last = int(variadic.group(1)) - 1 if variadic else max(argv, default=0)
    return (max(keys) if keys else None), last, variadic is not None


def test_each_partition_scripts_keys_are_the_ones_its_header_names_in_its_order() -> None:
    for name, keys in calls.PARTITION_KEYS.items():
        declared = re.findall(r"^-- KEYS\[\d+\]\s+\w+\s+<p>:(\w+)", read_lua(name), re.M)
        assert tuple(declared) == keys, name
        built = PK.named(keys, "n")
        assert built == [PK.node("n") if k == "node" else f"{PK.base}{k}" for k in keys]


def test_a_name_that_is_not_a_partition_key_is_refused() -> None:
    with pytest.raises(KeyError):
        PK.named(("alive", "nope"))


def test_every_script_has_a_wrapper() -> None:
    assert sorted(SAMPLES) == sorted(SCRIPT_NAMES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_wrapper_passes_the_keys_and_argv_its_header_declares(name: str) -> None:
    call = SAMPLES[name]()
    keys, last_argv, _ = _header(name)
    assert call.name == name
    if keys is not None:
        assert len(call.keys) == keys
    assert len(call.args) == last_argv  # the samples pass no variadic tail
    # Every key of a partition script carries its partition's hash tag (one slot).
    tags = {re.search(r"\{[^}]*\}", k).group(0) if "{" in k else k for k in call.keys}  # type: ignore[union-attr]
    assert len(tags) == 1
