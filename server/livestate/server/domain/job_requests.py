"""What Match and Enqueue share: the job fields of a request, validated, and narrowed by the
policy of the subcloud the job is sent to."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from livestate.server.core.errors import InvalidArgument, NotFound
from livestate.server.domain import jobs, validate
from livestate.server.store.runtime import Runtime
from livestate.server.store.subclouds import membership_of
from livestate.v1 import match_service_pb2, queue_service_pb2, subcloud_service_pb2

MAX_EXCLUDED = 1024
MAX_PRIORITY = 1000


def job_spec(
    rt: Runtime, request: match_service_pb2.MatchRequest | queue_service_pb2.EnqueueRequest
) -> jobs.JobSpec:
    """Validates the job fields shared by MatchRequest and EnqueueRequest."""
    cfg = rt.config
    validate.job_id(request.job_id)
    validate.name(request.env, "env", required=True)
    validate.model(request.model, "model", required=True)
    for i, region in enumerate(validate.distinct(request.regions, "regions", max_items=64)):
        validate.name(region, f"regions[{i}]", required=True)
    validate.at_most(request.min_vram_mb, validate.MAX_VRAM_MB, "min_vram_mb")
    for i, gpu in enumerate(validate.distinct(request.gpu_models, "gpu_models", max_items=64)):
        validate.text(gpu, f"gpu_models[{i}]", max_len=128)
    validate.name(request.subcloud, "subcloud", required=False)
    validate.labels(request.labels, "labels")
    excluded = validate.distinct(request.exclude_node_ids, "exclude_node_ids", max_items=MAX_EXCLUDED)
    for i, node_id in enumerate(excluded):
        validate.node_id(node_id, f"exclude_node_ids[{i}]")
    ttl = validate.duration(request.lease_ttl, "lease_ttl", maximum=cfg.max_lease_ttl) or cfg.lease_ttl
    if request.policy not in jobs.POLICY_NUMBERS:
        raise InvalidArgument("policy", f"unknown value {request.policy}")
    if not -MAX_PRIORITY <= request.priority <= MAX_PRIORITY:
        raise InvalidArgument("priority", f"must be within [-{MAX_PRIORITY}, {MAX_PRIORITY}]")
    isolated = frozenset(rt.subclouds.isolated() - {request.subcloud})
    job = jobs.JobSpec(
        job_id=request.job_id,
        env=request.env,
        model=request.model,
        regions=list(request.regions),
        min_vram_mb=request.min_vram_mb,
        gpu_models=list(request.gpu_models),
        subcloud=request.subcloud,
        labels=dict(request.labels),
        excluded=frozenset(excluded),
        lease_ttl_ms=int(ttl * 1000),
        policy=request.policy,
        priority=request.priority,
        isolated=isolated,
        granted=frozenset(rt.subclouds.granted() & isolated),
    )
    return with_subcloud_policy(rt, job)


def with_subcloud_policy(rt: Runtime, job: jobs.JobSpec) -> jobs.JobSpec:
    """Narrows a job sent to a subcloud by that subcloud's policy (a subcloud without one is
    plain, open membership). A job the policy can never serve is NOT_FOUND (SUBCLOUD_POLICY)."""
    policy = rt.subclouds.get(job.subcloud) if job.subcloud else None
    if policy is None:
        return job
    if membership_of(policy) == subcloud_service_pb2.SUBCLOUD_MEMBERSHIP_GRANTED:
        job = dataclasses.replace(job, granted=job.granted | {job.subcloud})

    def refuse(why: str) -> NotFound:
        return NotFound(f"subcloud {job.subcloud!r} {why}", reason="SUBCLOUD_POLICY")

    if policy.allowed_models and job.model not in policy.allowed_models:
        raise refuse(f"does not allow model {job.model!r}")
    regions = _narrowed(job.regions, policy.allowed_regions)
    if policy.allowed_regions and not regions:
        raise refuse("allows none of the job's regions")
    gpus = _narrowed(job.gpu_models, policy.allowed_gpu_models)
    if policy.allowed_gpu_models and not gpus:
        raise refuse("allows none of the job's GPU models")
    return dataclasses.replace(
        job,
        regions=regions,
        gpu_models=gpus,
        min_vram_mb=max(job.min_vram_mb, policy.min_vram_mb),
        excluded=job.excluded | frozenset(policy.banned_node_ids),
    )


def _narrowed(asked: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """What a job asks for within what the policy allows: the asked values it allows, or all it
    allows when the job asked for none; unchanged (empty: any) when the policy allows anything."""
    if not allowed:
        return list(asked)
    return [v for v in asked if v in allowed] if asked else list(allowed)
