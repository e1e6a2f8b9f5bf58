"""NodeService reads: GetNode, ListNodes (filters, paging), CountNodes."""

from __future__ import annotations

import grpc
import pytest

from harness import BUSY, IDLE, OFFLINE, ONLINE, SUSPECT, Harness, error_field, wait_for
from livestate.v1 import heartbeat_service_pb2 as hb
from livestate.v1 import node_pb2
from livestate.v1 import node_service_pb2 as ns


def _list(ls: Harness, **filters: object) -> list[str]:
    """All pages, as node ids; checks that paging neither repeats nor drops nodes."""
    ids: list[str] = []
    token = ""
    for _ in range(1000):
        page = ls.nodes.ListNodes(ns.ListNodesRequest(page_token=token, **filters), timeout=5)  # type: ignore[arg-type]
        ids += [n.spec.node_id for n in page.nodes]
        token = page.next_page_token
        if not token:
            break
    assert len(ids) == len(set(ids))
    return ids


def test_get_node_unknown_is_not_found(ls: Harness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ls.get("ghost")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_node_shows_offline_node_with_last_seen(ls: Harness) -> None:
    boot, registered = ls.register("gpu-1")
    ls.heartbeat.Deregister(hb.DeregisterRequest(node_id="gpu-1", boot_id=boot), timeout=5)

    node = ls.get("gpu-1")

    assert node.liveness == OFFLINE
    assert node.last_seen_time == registered.node.last_seen_time
    assert node.spec.models == ["llama-3-8b"]


def test_agent_version_and_config_digest_are_kept_and_dropped_with_the_spec(ls: Harness) -> None:
    ls.register("gpu-1", agent_version="agent-2.1", config_digest="sha256:abc")
    assert (ls.get("gpu-1").spec.agent_version, ls.get("gpu-1").spec.config_digest) == (
        "agent-2.1",
        "sha256:abc",
    )

    ls.register("gpu-1")  # a new spec without them: nothing of the old one lingers

    assert (ls.get("gpu-1").spec.agent_version, ls.get("gpu-1").spec.config_digest) == ("", "")


@pytest.fixture
def fleet(ls: Harness) -> Harness:
    """12 nodes over two envs, three regions, two models, one subcloud; mixed states."""
    for i in range(12):
        boot, _ = ls.register(
            f"n{i:02d}",
            env="prod" if i < 9 else "dev",
            region=["eu", "us", "ap"][i % 3],
            models=["llama"] if i % 2 == 0 else ["llama", "mistral"],
            subclouds=["acme"] if i % 4 == 0 else [],
        )
        ls.beat(f"n{i:02d}", boot, seq=1, state=BUSY if i % 3 == 0 else IDLE)
    return ls


def test_list_nodes_without_filters_returns_all_in_order(fleet: Harness) -> None:
    ids = _list(fleet, page_size=5)

    # Ordered by partition (env/region) then node id.
    assert ids == ["n11", "n09", "n10", "n02", "n05", "n08", "n00", "n03", "n06", "n01", "n04", "n07"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"env": "prod"}, {f"n{i:02d}" for i in range(9)}),
        ({"env": "prod", "region": "eu"}, {"n00", "n03", "n06"}),
        ({"model": "mistral"}, {f"n{i:02d}" for i in range(1, 12, 2)}),
        ({"env": "prod", "model": "mistral", "region": "us"}, {"n01", "n07"}),
        ({"subcloud": "acme"}, {"n00", "n04", "n08"}),
        ({"subcloud": "acme", "model": "llama"}, {"n00", "n04", "n08"}),
        ({"state": BUSY}, {"n00", "n03", "n06", "n09"}),
        ({"liveness": ONLINE, "env": "dev"}, {"n09", "n10", "n11"}),
        ({"liveness": SUSPECT}, set()),
        ({"env": "nowhere"}, set()),
    ],
)
def test_list_nodes_filters(fleet: Harness, filters: dict[str, object], expected: set[str]) -> None:
    assert set(_list(fleet, page_size=2, **filters)) == expected


def test_list_nodes_pages_are_bounded_by_page_size(fleet: Harness) -> None:
    first = fleet.nodes.ListNodes(ns.ListNodesRequest(page_size=4), timeout=5)
    assert len(first.nodes) == 4
    assert first.next_page_token


def test_list_nodes_rejects_token_when_filters_change(fleet: Harness) -> None:
    first = fleet.nodes.ListNodes(ns.ListNodesRequest(page_size=2, env="prod"), timeout=5)

    with pytest.raises(grpc.RpcError) as err:
        fleet.nodes.ListNodes(
            ns.ListNodesRequest(page_size=2, env="dev", page_token=first.next_page_token), timeout=5
        )

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == "page_token"


@pytest.mark.parametrize("token", ["garbage", "eyJwIjogMX0", "%%%"])
def test_list_nodes_rejects_forged_tokens(ls: Harness, token: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ls.nodes.ListNodes(ns.ListNodesRequest(page_token=token), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == "page_token"


def test_list_nodes_with_selective_filter_over_many_nodes_still_finds_all(ls: Harness) -> None:
    for i in range(300):
        ls.register(f"n{i:03d}", models=["llama"], region="eu")
    boot, _ = ls.register("zz-busy", models=["llama"], region="eu")
    ls.beat("zz-busy", boot, seq=1, state=BUSY)

    assert _list(ls, state=BUSY, page_size=10) == ["zz-busy"]


def test_count_nodes_counts_online_nodes_per_model_and_region(fleet: Harness) -> None:
    response = fleet.nodes.CountNodes(ns.CountNodesRequest(env="prod"), timeout=5)

    counts = {(c.model, c.region): c.online_nodes for c in response.counts}
    assert counts == {
        ("llama", "eu"): 3,
        ("llama", "us"): 3,
        ("llama", "ap"): 3,
        ("mistral", "eu"): 1,
        ("mistral", "us"): 2,
        ("mistral", "ap"): 1,
    }


def test_count_nodes_filters_and_drops_nodes_that_go_silent(fleet: Harness) -> None:
    request = ns.CountNodesRequest(env="dev", model="mistral")
    assert [(c.region, c.online_nodes) for c in fleet.nodes.CountNodes(request, timeout=5).counts] == [
        ("ap", 1),
        ("eu", 1),
    ]
    # Nobody beats: every node leaves the count once it is SUSPECT.
    wait_for(
        lambda: all(c.online_nodes == 0 for c in fleet.nodes.CountNodes(request, timeout=5).counts),
        timeout=fleet.config.suspect_after + 1,
    )


def test_count_nodes_requires_env(ls: Harness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ls.nodes.CountNodes(ns.CountNodesRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == "env"


def test_node_message_reports_liveness_enum(ls: Harness) -> None:
    ls.register("gpu-1")
    assert ls.get("gpu-1").liveness == node_pb2.LIVENESS_ONLINE
