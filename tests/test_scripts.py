"""Static checks on the Lua scripts and the key builder: one slot per script, headers that match
the keys passed, no keyspace-wide commands."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from harness import Harness
from livestate.server.store.calls import PARTITION_KEYS
from livestate.server.store.keys import Keys, Partition, PartitionKeys
from livestate.server.store.prelude import LIB, helpers, prelude
from livestate.server.store.scripts import SCRIPT_NAMES, read_lua

PARTITIONS = [Partition("mainnet", "eu-west"), Partition("testnet", ""), Partition("a.b", "c_d", 7)]
NODE = "node-1.x_y"


def _named(names: tuple[str, ...]) -> Callable[[PartitionKeys], list[str]]:
    return lambda pk: pk.named(names, NODE)


PARTITION_SCRIPTS: dict[str, Callable[[PartitionKeys], list[str]]] = {
    **{name: _named(names) for name, names in PARTITION_KEYS.items()},
    "membership": lambda pk: [pk.control(NODE), pk.control("other-node")],
}
# Scripts that take one key per item (KEYS[1..n]) instead of a fixed list.
PER_ITEM_KEYS = {"membership"}


def _declared_keys(name: str) -> int:
    return len(re.findall(r"^-- KEYS\[(\d+)\]", read_lua(name), flags=re.M))


@pytest.mark.parametrize("partition", PARTITIONS, ids=lambda p: p.label)
@pytest.mark.parametrize("script", sorted(PARTITION_SCRIPTS))
def test_every_key_of_a_partition_script_hashes_to_one_slot(script: str, partition: Partition) -> None:
    pk = Keys("ls").partition(partition)
    keys = PARTITION_SCRIPTS[script](pk)
    # Per-item keys are derived in Lua from these bases; any suffix keeps the {tag}.
    derived = [base + "some:item/with{braces}" for base in pk.bases()]

    slots = {key_slot(k.encode()) for k in keys + derived}

    assert len(slots) == 1, (script, keys)
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("script", sorted(PARTITION_SCRIPTS))
def test_script_headers_declare_the_keys_the_server_passes(script: str) -> None:
    pk = Keys("ls").partition(PARTITIONS[0])
    if script in PER_ITEM_KEYS:
        assert re.search(r"^-- KEYS\[1\.\.n\]", read_lua(script), flags=re.M)
    else:
        assert _declared_keys(script) == len(PARTITION_SCRIPTS[script](pk))
    # Every partition script reads its partition context first, as context() in lib/base.lua does.
    assert "-- ARGV[1..18] partition context (lib/base.lua)" in read_lua(script)
    assert "local C = context()" in read_lua(script)


def test_lua_context_matches_the_key_builder_and_runtime() -> None:
    lib = read_lua("lib/base")
    body = lib.split("local function context()", 1)[1].split("\nend", 1)[0]
    order = re.findall(r"(\w+) = (?:tonumber\()?ARGV\[(\d+)\]", body)
    assert [int(i) for _, i in order] == list(range(1, 19))
    pk = Keys("ls").partition(PARTITIONS[0])
    bases = pk.bases()
    for (name, _), base in zip(order, bases, strict=False):
        assert base.endswith(f":{name}:"), (name, base)
    assert [name for name, _ in order][len(bases) :] == [
        "label",
        "suspect_after",
        "offline_after",
        "epoch",
        "gap",
        "ttl",
        "margin",
        "maxlen",
    ]


def test_single_key_scripts_declare_one_key() -> None:
    assert _declared_keys("epoch") == 1
    assert _declared_keys("del_if_equal") == 1
    assert _declared_keys("settle") == 1
    assert _declared_keys("grant") == 1


def test_partitions_land_in_different_slots() -> None:
    slots = {key_slot(Keys("ls").partition(p).alive.encode()) for p in PARTITIONS}
    assert len(slots) == len(PARTITIONS)


@pytest.mark.parametrize("script", [*SCRIPT_NAMES, *(f"lib/{name}" for name in LIB)])
def test_scripts_never_walk_the_keyspace_or_use_commands_newer_than_redis_7_0(script: str) -> None:
    source = read_lua(script)
    calls = set(re.findall(r"redis\.call\('([A-Z]+)'", source))
    assert not calls & {"KEYS", "SCAN", "FLUSHALL", "FLUSHDB", "RANDOMKEY"}
    # Commands of Redis 7.2+ (and Valkey-only ones) would break on Debian's Redis 7.0.
    assert not calls & {"WAITAOF", "HEXPIRE", "HPEXPIRE", "HTTL", "HGETDEL", "HGETEX", "HSETEX", "SETIFEQ"}


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_scripts_open_with_a_header(script: str) -> None:
    first = read_lua(script).splitlines()[0]
    assert first.startswith(f"-- {script}.lua: ")


@pytest.mark.parametrize("name", LIB)
def test_helper_files_open_with_a_header_naming_their_concern(name: str) -> None:
    assert read_lua(f"lib/{name}").startswith(f"-- lib/{name}.lua: ")


def test_a_script_is_loaded_with_only_the_helpers_it_uses() -> None:
    lib = helpers([read_lua(f"lib/{name}") for name in LIB])
    # A script naming no helper gets none; one naming a helper gets it and what it uses, in order.
    assert prelude(lib, "return redis.call('GET', KEYS[1])") == ""
    needed = prelude(lib, "local C = context()\nreturn idle_leave(C, 'n', 'm', 1)")
    defined = re.findall(r"^local function (\w+)", needed, re.M)
    assert defined == ["context", "split", "vram_class", "idle_keys", "idle_leave"]
    assert "serve_waiting" not in needed


def test_a_helper_using_one_defined_after_it_is_refused() -> None:
    with pytest.raises(ValueError, match="before they are defined"):
        helpers(["local function a() return b() end", "local function b() return 1 end"])


def test_partition_label_round_trips() -> None:
    for p in PARTITIONS:
        assert Partition.from_label(p.label) == p
    with pytest.raises(ValueError):
        Partition.from_label("a/b")
    with pytest.raises(ValueError):
        Partition.from_label("/b/0")


def test_runtime_context_has_the_length_lib_expects(ls: Harness) -> None:
    rt = ls.server.rt
    pk = rt.keys.partition(PARTITIONS[0])
    context = rt.context(pk)
    assert len(context) == 18
    assert context[10] == PARTITIONS[0].label
