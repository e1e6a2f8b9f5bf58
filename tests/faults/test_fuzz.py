"""Fuzzing every RPC of every livestate service with raw request bytes: random bytes, mutated
valid requests, and well-formed requests with hostile field values; streaming methods also get
garbage mid-stream and are cancelled mid-stream. Every call must end in a status that says
something about the request or the server's state (see ALLOWED), never INTERNAL or UNKNOWN,
and the server must be healthy afterwards.

The methods come from the generated descriptors (every `livestate.v1.*_service_pb2` module), so
a new RPC is fuzzed without touching this file. Requests are built from field names and types.

Reproducible: the corpus is a function of the seed (LIVESTATE_FUZZ_SEED, printed on failure) and
the method's name; each failure names its method and request bytes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
import importlib
import json
import os
import pkgutil
import random
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message, message_factory, text_format
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2

import livestate.v1
from conftest import ServerFactory
from harness import Harness, wait_for
from livestate.server.api.auth import hash_token
from livestate.server.process.app import SERVICE_NAMES
from livestate.v1 import flag_pb2, subcloud_service_pb2_grpc
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import subcloud_service_pb2 as spb

# Fixed, so a run is repeatable; LIVESTATE_FUZZ_SEED=<n> explores another corpus.
SEED = int(os.environ.get("LIVESTATE_FUZZ_SEED", "20240611"))
UNARY_TIMEOUT = 2.0
STREAM_TIMEOUT = 0.5  # a valid Watch or Assignments stream just waits: this ends it
WORKERS = 8
# Corpus per method: unary methods get many more cases than streams (a stream costs a deadline).
RANDOM_UNARY, MUTATED_UNARY, WELL_FORMED_UNARY = 24, 48, 48
RANDOM_STREAM, MUTATED_STREAM, WELL_FORMED_STREAM, CANCELLED_STREAM = 8, 12, 12, 8
# With access control on, fewer cases per method, each under one of these tokens (or none).
AUTH_CASES = 12
TOKENS: dict[str, dict[str, Any]] = {
    "admin-token": {"name": "alice", "role": "admin"},
    "sched-token": {"name": "sched-1", "role": "scheduler"},
    "reader-token": {"name": "dash", "role": "reader"},
    "node-token": {"name": "agent", "role": "node", "node_id": "gpu-1"},
}

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}

MODEL = "llama-3-8b"
# Liveness slower than the run: the seeded nodes (which nobody beats) and their lease stay.
STEADY: dict[str, Any] = {"heartbeat_interval": 5.0, "suspect_after": 60.0, "offline_after": 120.0}


@dataclasses.dataclass(frozen=True)
class Method:
    path: str
    request: descriptor.Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


def _service_modules() -> list[ModuleType]:
    return [
        importlib.import_module(f"livestate.v1.{info.name}")
        for info in pkgutil.iter_modules(livestate.v1.__path__)
        if info.name.endswith("_service_pb2")
    ]


def all_methods() -> list[Method]:
    found = []
    for module in _service_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(
                    Method(
                        path=f"/{service.full_name}/{method.name}",
                        request=method.input_type,
                        client_streaming=method.client_streaming,
                        server_streaming=method.server_streaming,
                    )
                )
    return sorted(found, key=lambda m: m.path)


# --- requests ------------------------------------------------------------------------------------

# What a field of a given name holds in a valid request; the fuzz run fills in the lease.
KNOWN: dict[str, Any] = {
    "node_id": "gpu-1",
    "boot_id": "boot-1",
    "env": "test",
    "region": "eu-west",
    "model": MODEL,
    "models": [MODEL],
    "regions": ["eu-west"],
    "allowed_models": [MODEL],
    "allowed_regions": ["eu-west"],
    "job_id": "job-1",
    "scheduler_id": "sched-1",
    "name": "sub-1",
    "gpu_model": "NVIDIA L4",
    "reason": "disk",
    "message": "back soon",
    "agent_version": "1.0.0",
    "config_digest": "abc123",
    "gpu_count": 1,
    "vram_total_mb": 24_000,
    "vram_free_mb": 1_000,
    "slots": 1,
    "page_size": 10,
    "seq": 1,
}
# Left unset in a valid request: a `wait` would hold the call, the rest only fit some requests.
UNSET_MESSAGES = {"wait", "drain_deadline", "start_time"}
UNSET_SCALARS = {"page_token", "resume_token", "subcloud", "known_epoch"}
DEFAULT_SECONDS = 30


def message_class(desc: descriptor.Descriptor) -> type[message.Message]:
    cls: type[message.Message] = message_factory.GetMessageClass(desc)
    return cls


def valid_request(desc: descriptor.Descriptor, known: dict[str, Any]) -> message.Message:
    """A small request each field of which holds what its name says (so the call gets past
    validation and into Redis), or stays unset."""
    msg = message_class(desc)()
    for field in desc.fields:
        if field.name in (UNSET_MESSAGES if field.message_type is not None else UNSET_SCALARS):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue
        if field.message_type is not None:
            full = field.message_type.full_name
            if field.is_repeated:
                continue
            if full == "google.protobuf.Duration":
                getattr(msg, field.name).seconds = DEFAULT_SECONDS
            elif full == "google.protobuf.Timestamp":
                continue
            else:
                getattr(msg, field.name).CopyFrom(valid_request(field.message_type, known))
            continue
        if field.enum_type is not None:
            values = sorted(v for v in field.enum_type.values_by_number if v != 0)
            value: Any = values[0] if values else 0
            if field.is_repeated:
                getattr(msg, field.name).append(value)
            else:
                setattr(msg, field.name, value)
            continue
        if field.name not in known:
            continue  # "", 0, false: valid wherever the field is optional
        value = known[field.name]
        if field.is_repeated:
            getattr(msg, field.name).extend(value if isinstance(value, list) else [value])
        elif not isinstance(value, list):
            setattr(msg, field.name, value)
    return msg


HOSTILE_STRINGS = [
    "",
    "x" * 10_000,
    "\u00e9\u2603\U0001f600",
    "\x00",
    "a\nb",
    "gpu-1\n",
    "{tag}",
    "a,b",
    "../../etc/passwd",
    " ",
    "-",
    "+",
    "(",
    "*",
    "0-0",
    "1-0",
    "18446744073709551616-0",
    "test/eu-west/0",
    "test/eu-west/0/00000000000000ff",
    "\u202e\u200b",
    "%s%n",
]
INT32 = [0, 1, -1, 2**31 - 1, -(2**31)]
INT64 = [0, 1, -1, 2**63 - 1, -(2**63)]
UINT32 = [0, 1, 2**31, 2**32 - 1]
UINT64 = [0, 1, 2**53 + 1, 2**63, 2**64 - 1]
ENUMS = [0, 1, 2, 7, 99, -1, 2**31 - 1, -(2**31)]
DURATION_SECONDS = [-1, 0, 1, 10**6, 315_576_000_001, 2**63 - 1, -(2**63)]
NANOS = [0, -1, 1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)]
TIMESTAMP_SECONDS = [0, -62_135_596_801, 253_402_300_800, 2**63 - 1, -(2**63), int(time.time())]


def _token(rng: random.Random) -> str:
    """Something shaped like a page or resume token: base64 of JSON, of an id, or of junk."""
    choices: list[Any] = [
        {"test/eu-west/0": "1-0"},
        {"p": "test/eu-west/0", "a": "gpu-1", "f": "0" * 12},
        {"test/eu-west/0": rng.choice(HOSTILE_STRINGS)},
        [1, 2],
        "[" * 3000,
        rng.choice(HOSTILE_STRINGS),
        bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))),
    ]
    raw = rng.choice(choices)
    if isinstance(raw, bytes):
        data = raw
    elif isinstance(raw, str):
        data = raw.encode()
    else:
        data = json.dumps(raw).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# Values that pass validation but vary the state the calls meet: other nodes, jobs, models,
# schedulers, edge sizes. They are what lets the fuzz reach past validation into Redis.
PLAUSIBLE: dict[str, list[Any]] = {
    "node_id": ["gpu-1", "gpu-2", "gpu-3", "gpu-9", "n" * 128],
    "boot_id": ["boot-1", "boot-2", "b" * 128],
    "job_id": ["job-1", "job-2", "job-seed", "j:1", "j" * 128],
    "model": [MODEL, "m-a", "m-b", "org/model@v1+q4", "m" * 256],
    "env": ["test", "prod", "e" * 64],
    "region": ["eu-west", "us-east", "r" * 64],
    "scheduler_id": ["sched-1", "sched-2"],
    "subcloud": ["sub-1", "sub-2"],
    "name": ["sub-1", "sub-2"],
    "gpu_model": ["NVIDIA L4", "NVIDIA H100", ""],
    "reason": ["disk", "", "r" * 128],
    "message": ["back soon", "m" * 1024],
    "page_token": [""],
    "resume_token": [""],
}
PLAUSIBLE_INTS = [0, 1, 2, 3, 10, 100, 1000, 1001, 1024, 1 << 20, 1 << 40, (1 << 40) + 1]
PLAUSIBLE_SECONDS = [0, 1, 5, 30, 3600, 86_400, 86_401, 366 * 86_400 + 1]
INT_TYPES = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}


def _hostile_scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.type
    if field.enum_type is not None:
        return rng.choice(ENUMS)
    if kind == FieldDescriptor.TYPE_STRING:
        if field.name.endswith("_token") and rng.random() < 0.6:
            return _token(rng)
        if rng.random() < 0.25:
            length = rng.choice([1, 8, 64, 300])
            return "".join(chr(rng.randint(0x20, 0x2FF)) for _ in range(length))
        return rng.choice(HOSTILE_STRINGS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in INT_TYPES:
        return rng.choice(INT_TYPES[kind])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, float("inf"), float("-inf"), float("nan"), 1e308])
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


def _plausible_scalar(field: FieldDescriptor, rng: random.Random, known: dict[str, Any]) -> Any:
    if field.enum_type is not None:
        return rng.choice(sorted(field.enum_type.values_by_number))
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name == "lease_id":
            return rng.choice([*known.get("lease_ids", []), "test/eu-west/0/00000000000000ff"])
        singular = field.name.removesuffix("s")
        pool = PLAUSIBLE.get(field.name) or PLAUSIBLE.get(singular) or ["x", "ok-1"]
        return rng.choice(pool)
    if field.name == "fencing_token":
        return rng.choice([*known.get("fencing_tokens", []), 0, 1, 2**64 - 1])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type in INT_TYPES:
        top = max(INT_TYPES[field.type])
        return min(rng.choice(PLAUSIBLE_INTS), top)
    return rng.choice([0.0, 0.5, 1.0])


def _scalar(field: FieldDescriptor, rng: random.Random, known: dict[str, Any]) -> Any:
    """A value for one scalar field: plausible (valid, but not the base request's) more often
    than hostile."""
    return _hostile_scalar(field, rng) if rng.random() < 0.4 else _plausible_scalar(field, rng, known)


def _perturb(
    msg: message.Message,
    desc: descriptor.Descriptor,
    rng: random.Random,
    known: dict[str, Any],
    depth: int = 0,
) -> None:
    """Replaces a few fields of `msg` (a valid request), sometimes all of them, recursively."""
    fields = list(desc.fields)
    if not fields:
        return
    count = len(fields) if rng.random() < 0.15 else rng.choice([1, 1, 1, 2, 3])
    for field in rng.sample(fields, min(count, len(fields))):
        target: Any = getattr(msg, field.name) if (field.is_repeated or field.message_type) else None
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target.clear()
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(rng.choice([0, 1, 3, 100])):
                key = rng.choice([*HOSTILE_STRINGS, "k", f"k{rng.randint(0, 9)}", "gpu/kind"])
                if value_field.message_type is None:
                    target[key] = _scalar(value_field, rng, known)
            continue
        if field.message_type is not None:
            items: list[Any] = [target]
            if field.is_repeated:
                target.clear()
                items = [target.add() for _ in range(rng.choice([0, 1, 2, 50]))]
            for item in items:
                _perturb_message(field.message_type, item, rng, known, depth)
            continue
        if field.is_repeated:
            target.clear()
            first = _scalar(field, rng, known)
            same = rng.random() < 0.2  # duplicates
            target.extend(
                first if same else _scalar(field, rng, known) for _ in range(rng.choice([0, 1, 2, 200]))
            )
            continue
        setattr(msg, field.name, _scalar(field, rng, known))


def _perturb_message(
    desc: descriptor.Descriptor, item: Any, rng: random.Random, known: dict[str, Any], depth: int
) -> None:
    hostile = rng.random() < 0.4
    full = desc.full_name
    if full == "google.protobuf.Duration":
        item.seconds = rng.choice(DURATION_SECONDS if hostile else PLAUSIBLE_SECONDS)
        item.nanos = rng.choice(NANOS if hostile else [0, 500_000_000])
    elif full == "google.protobuf.Timestamp":
        item.seconds = rng.choice(TIMESTAMP_SECONDS)
        item.nanos = rng.choice(NANOS if hostile else [0, 500_000_000])
    elif depth < 3:
        _perturb(item, desc, rng, known, depth + 1)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at:at] = bytes([rng.getrandbits(8)])
        elif op == 2 and buf:
            del buf[rng.randrange(len(buf))]
        elif op == 3 and buf:
            buf[rng.randrange(len(buf))] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        elif op == 4:
            del buf[at:]
        elif op == 5 and buf:
            j = rng.randint(at, len(buf))
            buf[at:at] = buf[at:j]
        else:
            buf[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
    return bytes(buf)


def _random_bytes(rng: random.Random) -> bytes:
    length = rng.choice([0, 1, 2, 3, 8, 32, 128, 1024, 4096, 200_000])
    return bytes(rng.getrandbits(8) for _ in range(length)) if length < 5000 else rng.randbytes(length)


# --- calls ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    method: Method
    kind: str
    payload: list[bytes]  # one request, or the messages of a client stream
    cancel_after: float | None = None  # seconds after which the client cancels the call
    token: str | None = None  # sent as a bearer token


@dataclasses.dataclass
class Outcome:
    case: Case
    code: grpc.StatusCode
    details: str


def _corpus(method: Method, known: dict[str, Any], seed: int) -> list[Case]:
    rng = random.Random(f"{seed}:{method.path}")
    base = valid_request(method.request, known)
    valid = base.SerializeToString()

    def well_formed() -> bytes:
        msg = message_class(method.request)()
        msg.CopyFrom(base)
        _perturb(msg, method.request, rng, known)
        return msg.SerializeToString()

    counts = (
        (RANDOM_STREAM, MUTATED_STREAM, WELL_FORMED_STREAM)
        if method.streaming
        else (RANDOM_UNARY, MUTATED_UNARY, WELL_FORMED_UNARY)
    )
    makers: list[tuple[str, int, Callable[[], bytes]]] = [
        ("random", counts[0], lambda: _random_bytes(rng)),
        ("mutated", counts[1], lambda: _mutate(valid, rng)),
        ("well-formed", counts[2], well_formed),
    ]
    cases = [Case(method, "valid", [valid])]
    for kind, count, make in makers:
        for _ in range(count):
            if method.client_streaming:
                # A stream that starts well and turns bad (or is bad from the start).
                messages = [valid] if rng.random() < 0.7 else []
                messages += [make() for _ in range(rng.randint(1, 4))]
                cases.append(Case(method, kind, messages))
            else:
                cases.append(Case(method, kind, [make()]))
    if method.streaming:
        for _ in range(CANCELLED_STREAM):
            payload = [valid] * rng.randint(1, 3) if method.client_streaming else [valid]
            cases.append(Case(method, "cancelled", payload, cancel_after=rng.choice([0.0, 0.02, 0.1])))
    return cases


def _invoke(channel: grpc.Channel, case: Case) -> Outcome:
    method = case.method
    timeout = STREAM_TIMEOUT if method.streaming else UNARY_TIMEOUT
    metadata = (("authorization", f"Bearer {case.token}"),) if case.token is not None else None
    try:
        if method.client_streaming:
            release = threading.Event()

            def requests() -> Iterator[bytes]:
                yield from case.payload
                if case.cancel_after is not None:
                    release.wait(timeout)  # keep the stream open until the cancel

            bidi = channel.stream_stream(method.path, None, None)
            call: Any = bidi(requests(), timeout=timeout, metadata=metadata)
            try:
                _drain(call, case)
            finally:
                release.set()
        elif method.server_streaming:
            server_stream = channel.unary_stream(method.path, None, None)
            call = server_stream(case.payload[0], timeout=timeout, metadata=metadata)
            _drain(call, case)
        else:
            channel.unary_unary(method.path, None, None)(case.payload[0], timeout=timeout, metadata=metadata)
    except grpc.RpcError as err:
        return Outcome(case, err.code(), err.details() or "")
    return Outcome(case, grpc.StatusCode.OK, "")


def _drain(call: Any, case: Case) -> None:
    if case.cancel_after is not None:
        timer = threading.Timer(case.cancel_after, call.cancel)
        timer.start()
        try:
            for _ in call:
                pass
        finally:
            timer.cancel()
        return
    for _ in call:
        pass


def _describe(outcome: Outcome) -> str:
    case = outcome.case
    shown = []
    for raw in case.payload:
        try:
            parsed = message_class(case.method.request).FromString(raw)
            text = text_format.MessageToString(parsed, as_one_line=True)
        except Exception:
            text = "<does not parse>"
        shown.append(f"      bytes={raw[:120].hex()}{'...' if len(raw) > 120 else ''} ({len(raw)} B)")
        shown.append(f"      parsed: {text[:400]}")
    return (
        f"  {case.method.path} [{case.kind}{', cancelled' if case.cancel_after is not None else ''}"
        f"{f', token {case.token}' if case.token is not None else ''}] "
        f"-> {outcome.code.name}: {outcome.details[:200]}\n" + "\n".join(shown)
    )


def _seed_state(ls: Harness) -> dict[str, Any]:
    """Something for valid requests to find: nodes, a flag, a subcloud, leases. The leases are
    on nodes of their own, which the fuzzed requests do not name, so they live until a fuzzed
    Renew, Release or Fail ends them."""
    known = dict(KNOWN)
    for node_id in ("gpu-1", "gpu-2", "gpu-3"):
        ls.register(node_id, boot_id="boot-1")
    ls.flags.SetFlag(fpb.SetFlagRequest(node_id="gpu-3", kind=flag_pb2.FLAG_KIND_PAUSE), timeout=5)
    subclouds = subcloud_service_pb2_grpc.SubcloudServiceStub(ls.channel)
    subclouds.PutSubcloud(
        spb.PutSubcloudRequest(subcloud=spb.Subcloud(name="sub-1", allowed_models=[MODEL])), timeout=5
    )
    leases = []
    for i in range(3):
        ls.register(f"leased-{i}", boot_id="boot-1", models=["leased-model"])
        leases.append(ls.match(f"job-leased-{i}", model="leased-model").lease)
    known["lease_id"], known["fencing_token"] = leases[0].lease_id, leases[0].fencing_token
    known["lease_ids"] = [lease.lease_id for lease in leases]
    known["fencing_tokens"] = [lease.fencing_token for lease in leases]
    return known


def _run(ls: Harness, cases: list[Case]) -> list[Outcome]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda case: _invoke(ls.channel, case), cases))


def _serving(ls: Harness, service: str) -> bool:
    status = ls.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def _healthy(ls: Harness) -> None:
    assert _serving(ls, "")
    for name in SERVICE_NAMES:  # Redis readiness: the fuzz must not have wedged the store
        wait_for(functools.partial(_serving, ls, name), timeout=5)
    ls.register("after-fuzz")
    assert ls.get("after-fuzz").spec.node_id == "after-fuzz"


def test_methods_are_discovered_from_the_descriptors() -> None:
    paths = {m.path for m in all_methods()}
    assert {
        "/livestate.v1.HeartbeatService/Heartbeat",
        "/livestate.v1.NodeService/Watch",
        "/livestate.v1.QueueService/Assignments",
        "/livestate.v1.MatchService/Match",
        "/livestate.v1.FlagService/SetFlag",
        "/livestate.v1.SubcloudService/PutSubcloud",
    } <= paths
    for method in all_methods():  # every valid request builds and round-trips
        request = valid_request(method.request, {**KNOWN, "lease_id": "x", "fencing_token": 1})
        assert message_class(method.request).FromString(request.SerializeToString()) == request


def _check(outcomes: list[Outcome], seed: int) -> None:
    bad = [
        o
        for o in outcomes
        if o.code not in ALLOWED
        and not (o.case.cancel_after is not None and o.code == grpc.StatusCode.CANCELLED)
    ]
    if bad:
        pytest.fail(
            f"{len(bad)} of {len(outcomes)} fuzzed calls ended badly (seed {seed}; rerun with "
            f"LIVESTATE_FUZZ_SEED={seed}):\n" + "\n".join(_describe(o) for o in bad[:40]),
            pytrace=False,
        )


def test_fuzzed_requests_never_answer_internal(make_server: ServerFactory) -> None:
    ls = make_server(**STEADY)
    known = _seed_state(ls)
    cases = [case for method in all_methods() for case in _corpus(method, known, SEED)]
    random.Random(SEED).shuffle(cases)  # methods interleave: each meets the others' state
    started = time.monotonic()

    outcomes = _run(ls, cases)

    elapsed = time.monotonic() - started
    _check(outcomes, SEED)
    # The fuzz reached past decoding: some calls were answered by the servicers themselves.
    codes = {o.code for o in outcomes}
    assert grpc.StatusCode.OK in codes and grpc.StatusCode.INVALID_ARGUMENT in codes, codes
    assert len(outcomes) >= 2_500, len(outcomes)
    print(f"fuzz: {len(outcomes)} calls in {elapsed:.1f}s, seed {SEED}")
    _healthy(ls)


def test_fuzzed_requests_with_access_control_never_answer_internal(make_server: ServerFactory) -> None:
    """The same, through the token check: no token, an unknown one, and every role's, so the
    role table, the node and scheduler bindings and decoding meet fuzzed input together."""
    table = json.dumps({"tokens": [{**entry, "sha256": hash_token(t)} for t, entry in TOKENS.items()]})
    ls = make_server(auth_tokens=table, **STEADY)
    rng = random.Random(f"{SEED}:auth")
    tokens: list[str | None] = [None, "guess", *TOKENS]
    cases = []
    for method in all_methods():
        corpus = _corpus(method, KNOWN, SEED)
        for case in rng.sample(corpus, min(AUTH_CASES, len(corpus))):
            case.token = rng.choice(tokens)
            cases.append(case)

    outcomes = _run(ls, cases)

    _check(outcomes, SEED)
    codes = {o.code for o in outcomes}
    assert {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED} <= codes, codes
    assert _serving(ls, "")
