"""Page and resume tokens are opaque to callers but not trusted from them: a forged one is
INVALID_ARGUMENT naming the field, decided before it reaches Redis (where a bogus stream id or
key would fail as INTERNAL), and a token the server issued keeps working."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import grpc
import pytest

from harness import Harness, error_field
from livestate.v1 import flag_pb2
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import node_service_pb2 as ns


def _b64(raw: bytes | str) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _json_token(value: object) -> str:
    return _b64(json.dumps(value))


def _assert_invalid(call: Callable[[], object], field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert error_field(err.value) == field


NOT_BASE64 = ["%%%", "a", "é"]
NESTED = _b64("[" * 50_000)  # json.loads gives up with RecursionError, not ValueError

FORGED_CHANGE_TOKENS = [
    *NOT_BASE64,
    _b64("abc"),
    _b64("123"),  # a stream id has both parts
    _b64("1-2-3"),
    _b64("-1"),
    _b64("1-"),
    _b64(" 1-0"),
    _b64("1_0-0"),  # int() would take it
    _b64("\u0663-0"),  # an Arabic-Indic digit: int() would take it too
    _b64("0-0"),  # nothing comes before it: XREVRANGE refuses the exclusive bound
    _b64("18446744073709551616-0"),  # past 64 bits
    _b64("1-18446744073709551616"),
    _b64(b"\xff\xfe"),
]


@pytest.mark.parametrize("token", FORGED_CHANGE_TOKENS)
def test_list_flag_changes_rejects_forged_page_tokens(ls: Harness, token: str) -> None:
    ls.flags.SetFlag(fpb.SetFlagRequest(node_id="gpu-1", kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5)
    request = fpb.ListFlagChangesRequest(page_token=token)
    _assert_invalid(lambda: ls.flags.ListFlagChanges(request, timeout=5), "page_token")


def test_list_flag_changes_pages_with_the_tokens_it_issues(ls: Harness) -> None:
    for node_id in ("gpu-1", "gpu-2", "gpu-3"):
        ls.flags.SetFlag(fpb.SetFlagRequest(node_id=node_id, kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5)
    seen, token = [], ""
    for _ in range(5):
        page = ls.flags.ListFlagChanges(fpb.ListFlagChangesRequest(page_size=2, page_token=token), timeout=5)
        seen += [c.node_id for c in page.changes]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["gpu-3", "gpu-2", "gpu-1"]
    # The largest stream id there can be is still a token: it reads from the newest entry on.
    biggest = _json_token("18446744073709551615-18446744073709551615")
    page = ls.flags.ListFlagChanges(fpb.ListFlagChangesRequest(page_token=biggest), timeout=5)
    assert [c.node_id for c in page.changes] == ["gpu-3", "gpu-2", "gpu-1"]


@pytest.mark.parametrize(
    "token",
    [
        *NOT_BASE64,
        _b64("gpu-1"),  # not JSON
        _json_token("has space"),
        _json_token("x" * 129),
        _json_token("brace{tag}"),
        _json_token("a,b"),
        _json_token(5),
        _json_token(["gpu-1"]),
        NESTED,
    ],
)
def test_list_flags_rejects_tokens_that_are_not_node_ids(ls: Harness, token: str) -> None:
    request = fpb.ListFlagsRequest(page_token=token)
    _assert_invalid(lambda: ls.flags.ListFlags(request, timeout=5), "page_token")


def test_list_flags_accepts_a_node_id_token(ls: Harness) -> None:
    for node_id in ("gpu-1", "gpu-2"):
        ls.flags.SetFlag(fpb.SetFlagRequest(node_id=node_id, kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5)
    page = ls.flags.ListFlags(fpb.ListFlagsRequest(page_token=_json_token("gpu-1")), timeout=5)
    assert [f.node_id for f in page.flags] == ["gpu-2"]


LABEL = "test/eu-west/0"
FORGED_RESUME_TOKENS = [
    *NOT_BASE64,
    NESTED,
    _b64("not json"),
    _json_token(None),
    _json_token(5),
    _json_token("x"),
    _json_token([[LABEL, "1-0"]]),  # dict() would take a list of pairs
    _json_token({LABEL: "abc"}),
    _json_token({LABEL: "1"}),
    _json_token({LABEL: "1-2-3"}),
    _json_token({LABEL: " 1-0"}),
    _json_token({LABEL: "1_0-0"}),
    _json_token({LABEL: "\u0663-0"}),
    _json_token({LABEL: "18446744073709551616-0"}),
    _json_token({LABEL: 5}),
    _json_token({LABEL: ["1-0"]}),
    _json_token({LABEL: None}),
    _json_token({"nolabel": "1-0"}),
    _json_token({"test/eu-west": "1-0"}),
    _json_token({"test/eu-west/x": "1-0"}),
    _json_token({"test/eu-west/-1": "1-0"}),
    _json_token({"test/eu-west/01": "1-0"}),  # parses, but is not the label it names
    _json_token({"/eu-west/0": "1-0"}),
    _json_token({"te{st}/eu-west/0": "1-0"}),
    _json_token({f"e{i}/r/0": "0-0" for i in range(5000)}),
]


@pytest.mark.parametrize("token", FORGED_RESUME_TOKENS)
def test_watch_rejects_forged_resume_tokens(ls: Harness, token: str) -> None:
    ls.register("gpu-1")
    request = ns.WatchRequest(env="test", resume_token=token)
    _assert_invalid(lambda: list(ls.nodes.Watch(request, timeout=5)), "resume_token")


def test_watch_resumes_from_a_well_formed_token_for_an_unknown_partition(ls: Harness) -> None:
    """A label this server never issued but that parses is a partition with nothing retained:
    from its very start that is nothing missed, so the watch runs (until the deadline here)."""
    ls.register("gpu-1")
    token = _json_token({"elsewhere/eu-west/0": "0-0"})
    with pytest.raises(grpc.RpcError) as err:
        list(ls.nodes.Watch(ns.WatchRequest(env="test", resume_token=token), timeout=0.5))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _tampered(ls: Harness, **fields: object) -> str:
    """A ListNodes token the server issued, with fields replaced (its filter digest kept, so the
    token gets past the check that the filters did not change)."""
    for node_id in ("gpu-1", "gpu-2"):
        ls.register(node_id)
    issued = ls.nodes.ListNodes(ns.ListNodesRequest(page_size=1), timeout=5).next_page_token
    data = json.loads(base64.urlsafe_b64decode(issued + "=" * (-len(issued) % 4)))
    return _json_token({**data, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"a": ["x"]},
        {"a": "has space"},
        {"a": None},
        {"p": 5},
        {"p": "test/eu-west/01"},
        {"p": "nolabel"},
    ],
)
def test_list_nodes_rejects_tampered_tokens(ls: Harness, fields: dict[str, object]) -> None:
    token = _tampered(ls, **fields)
    _assert_invalid(
        lambda: ls.nodes.ListNodes(ns.ListNodesRequest(page_token=token), timeout=5), "page_token"
    )


@pytest.mark.parametrize("token", [NESTED, _json_token([1, 2]), _json_token("p")])
def test_list_nodes_rejects_tokens_of_the_wrong_shape(ls: Harness, token: str) -> None:
    _assert_invalid(
        lambda: ls.nodes.ListNodes(ns.ListNodesRequest(page_token=token), timeout=5), "page_token"
    )


def test_list_nodes_still_pages_with_its_own_tokens(ls: Harness) -> None:
    token = _tampered(ls)
    page = ls.nodes.ListNodes(ns.ListNodesRequest(page_token=token), timeout=5)
    assert [n.spec.node_id for n in page.nodes] == ["gpu-2"]
