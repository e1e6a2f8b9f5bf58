"""Subclouds: policies (Put/Get/List/Delete), isolate, policy filters, cache across servers."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from conftest import ServerFactory
from harness import Harness, error_field, error_reason, wait_for
from livestate.v1 import subcloud_service_pb2 as spb


def test_put_get_list_delete(ls: Harness) -> None:
    stored = ls.put_subcloud("acme", isolate=True, allowed_models=["llama-3-8b"], min_vram_mb=16_000)
    ls.put_subcloud("beta")

    got = ls.subclouds.GetSubcloud(spb.GetSubcloudRequest(name="acme"), timeout=5).subcloud
    listed = ls.subclouds.ListSubclouds(spb.ListSubcloudsRequest(), timeout=5).subclouds

    assert got == stored and got.isolate and got.update_time.seconds > 0
    assert [s.name for s in listed] == ["acme", "beta"]
    assert ls.subclouds.DeleteSubcloud(spb.DeleteSubcloudRequest(name="acme"), timeout=5).deleted
    with pytest.raises(grpc.RpcError) as err:
        ls.subclouds.GetSubcloud(spb.GetSubcloudRequest(name="acme"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_isolated_members_serve_only_their_subcloud(ls: Harness) -> None:
    ls.register("private", subclouds=["acme"])
    ls.put_subcloud("acme", isolate=True)
    ls.subclouds.AddSubcloudMembers(
        spb.AddSubcloudMembersRequest(subcloud="acme", node_ids=["private"]), timeout=5
    )

    assert ls.try_match("public-job") is None
    assert ls.try_match("acme-job", subcloud="acme") == "private"


def test_members_of_a_plain_subcloud_serve_anyone(ls: Harness) -> None:
    ls.register("shared", subclouds=["beta"])
    ls.put_subcloud("beta")
    assert ls.try_match("public-job") == "shared"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"min_vram_mb": 40_000}, "big"),
        ({"allowed_gpu_models": ["NVIDIA H100"]}, "big"),
        ({"allowed_regions": ["us"]}, "us-small"),
        ({"banned_node_ids": ["small", "us-small"]}, "big"),
    ],
)
def test_policy_narrows_the_match(ls: Harness, policy: dict[str, Any], expected: str) -> None:
    ls.register("small", subclouds=["acme"])
    ls.register("us-small", subclouds=["acme"], region="us")
    ls.register("big", subclouds=["acme"], vram_total_mb=81_920, gpu_model="NVIDIA H100")
    ls.register("outsider", vram_total_mb=81_920, gpu_model="NVIDIA H100", region="us")
    ls.put_subcloud("acme", **policy)

    assert ls.try_match("job", subcloud="acme") == expected


def test_policy_refuses_a_model_it_does_not_allow(ls: Harness) -> None:
    ls.register("n", subclouds=["acme"])
    ls.put_subcloud("acme", allowed_models=["mistral-7b"])

    with pytest.raises(grpc.RpcError) as err:
        ls.match("job", subcloud="acme")

    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "SUBCLOUD_POLICY"


@pytest.mark.parametrize(
    ("policy", "job"),
    [
        ({"allowed_regions": ["us"]}, {"regions": ["eu-west"]}),
        ({"allowed_gpu_models": ["NVIDIA H100"]}, {"gpu_models": ["NVIDIA L4"]}),
    ],
    ids=["region", "gpu"],
)
def test_policy_refuses_a_job_whose_every_choice_it_disallows(
    ls: Harness, policy: dict[str, Any], job: dict[str, Any]
) -> None:
    ls.register("n", subclouds=["acme"])
    ls.put_subcloud("acme", **policy)

    with pytest.raises(grpc.RpcError) as err:
        ls.match("job", subcloud="acme", **job)

    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "SUBCLOUD_POLICY"


def test_a_put_reaches_every_server_within_the_cache_time(make_server: ServerFactory) -> None:
    a = make_server(subcloud_cache_ttl=0.3)
    b = make_server(subcloud_cache_ttl=0.3)
    a.register("private", subclouds=["acme"])
    assert b.try_match("j0") == "private"
    b.release(b.match("j0").lease)

    a.put_subcloud("acme", isolate=True, membership=spb.SUBCLOUD_MEMBERSHIP_OPEN)
    attempts = iter(range(10_000))

    def isolated_on_b() -> bool:
        job = f"j{next(attempts)}"
        node = b.try_match(job)
        if node is not None:
            b.release(b.match(job).lease)
        return node is None

    wait_for(isolated_on_b, timeout=1.0)


def test_bad_policy_is_invalid(ls: Harness) -> None:
    for policy, field in (
        ({"name": ""}, "subcloud.name"),
        ({"name": "a b"}, "subcloud.name"),
        ({"name": "x", "allowed_models": ["a,b"]}, "subcloud.allowed_models[0]"),
        ({"name": "x", "banned_node_ids": ["bad id"]}, "subcloud.banned_node_ids[0]"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            ls.subclouds.PutSubcloud(spb.PutSubcloudRequest(subcloud=spb.Subcloud(**policy)), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_field(err.value) == field
