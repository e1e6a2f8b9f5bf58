"""The `livestate` command: `serve` (needs the server extra) and the admin commands, which need
only the client install.

    livestate flag set NODE KIND [--ttl S] [--reason R] [--message M] [--start-time ISO] [--drain-deadline S]
    livestate flag clear NODE KIND
    livestate flag ls [--node NODE] [--kind KIND]
    livestate flag log [--node NODE]
    livestate subcloud put NAME [--isolate] [--membership open|granted] [--model M ...] [--region R ...]
                                [--min-vram MB] [--gpu G ...] [--ban NODE ...]
    livestate subcloud get NAME | ls | rm NAME
    livestate subcloud grant NAME NODE ... [--reason R] | revoke NAME NODE ... [--reason R]
    livestate subcloud members NAME
    livestate subcloud log [--subcloud NAME] [--node NODE]
    livestate nodes ls [--env E] [--model M] [--region R] [--liveness L] [--state S] [--subcloud C]
    livestate nodes get NODE
    livestate watch [--env E] [--region R] [--type T ...]

Every admin command takes --server HOST:PORT (env LIVESTATE_SERVER, default 127.0.0.1:50051),
--token (env LIVESTATE_TOKEN), --ca FILE for TLS (env LIVESTATE_CA; --cert/--key for mutual TLS)
and --json for machine-readable output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from livestate.client.retries import CHANNEL_OPTIONS
from livestate.v1 import flag_pb2, node_pb2
from livestate.v1 import flag_service_pb2 as fpb
from livestate.v1 import flag_service_pb2_grpc as fpb_grpc
from livestate.v1 import node_service_pb2 as npb
from livestate.v1 import node_service_pb2_grpc as npb_grpc
from livestate.v1 import subcloud_service_pb2 as spb
from livestate.v1 import subcloud_service_pb2_grpc as spb_grpc


def _enum_arg(enum: Any, prefix: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            return int(enum.Value(prefix + value.upper().replace("-", "_")))
        except ValueError:
            names = ", ".join(n[len(prefix) :].lower() for n in enum.keys()[1:])
            raise argparse.ArgumentTypeError(f"one of {names}") from None

    return parse


FLAG_KIND = _enum_arg(flag_pb2.FlagKind, "FLAG_KIND_")
LIVENESS = _enum_arg(node_pb2.Liveness, "LIVENESS_")
STATE = _enum_arg(node_pb2.NodeState, "NODE_STATE_")
EVENT = _enum_arg(node_pb2.NodeEventType, "NODE_EVENT_TYPE_")


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(args.ca).read_bytes(),
            private_key=Path(args.key).read_bytes() if args.key else None,
            certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
        )
        if args.token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(args.token))
        return grpc.secure_channel(args.server, creds, options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(args.server, options=CHANNEL_OPTIONS)


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    # Over TLS the call credentials carry the token; on a plain loopback channel, metadata does.
    return [("authorization", f"Bearer {args.token}")] if args.token and not args.ca else []


def _ts(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.datetime.fromtimestamp(ts.seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _emit(
    args: argparse.Namespace,
    messages: Sequence[Message],
    headers: Sequence[str],
    row: Callable[[Any], Sequence[object]],
) -> None:
    if args.json:
        for message in messages:
            print(json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True))
    else:
        print(_table(headers, [row(m) for m in messages]))


def _kind_name(kind: int) -> str:
    return flag_pb2.FlagKind.Name(kind)[len("FLAG_KIND_") :].lower()


def _flag_row(f: flag_pb2.Flag) -> Sequence[object]:
    return (f.node_id, _kind_name(f.kind), f.actor, f.reason or "-", _ts(f.expire_time), f.message or "-")


FLAG_HEADERS = ("NODE", "KIND", "ACTOR", "REASON", "EXPIRES", "MESSAGE")


def cmd_flag(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = fpb_grpc.FlagServiceStub(channel)
    md = _metadata(args)
    if args.action == "set":
        request = fpb.SetFlagRequest(
            node_id=args.node, kind=args.kind, reason=args.reason, message=args.message
        )
        if args.ttl:
            request.ttl.FromNanoseconds(int(args.ttl * 1e9))
        if args.drain_deadline:
            request.drain_deadline.FromNanoseconds(int(args.drain_deadline * 1e9))
        if args.start_time:
            request.start_time.FromDatetime(datetime.datetime.fromisoformat(args.start_time))
        _emit(args, [stub.SetFlag(request, timeout=10, metadata=md).flag], FLAG_HEADERS, _flag_row)
    elif args.action == "clear":
        cleared = stub.ClearFlag(
            fpb.ClearFlagRequest(node_id=args.node, kind=args.kind), timeout=10, metadata=md
        )
        print(
            json.dumps({"cleared": cleared.cleared})
            if args.json
            else ("cleared" if cleared.cleared else "no such flag")
        )
    elif args.action == "ls":
        flags, token = [], ""
        while True:
            page = stub.ListFlags(
                fpb.ListFlagsRequest(
                    node_id=args.node or "", kind=flag_pb2.FlagKind.Name(args.kind or 0), page_token=token
                ),
                timeout=10,
                metadata=md,
            )
            flags += list(page.flags)
            token = page.next_page_token
            if not token:
                break
        _emit(args, flags, FLAG_HEADERS, _flag_row)
    else:  # log
        page = stub.ListFlagChanges(
            fpb.ListFlagChangesRequest(node_id=args.node or "", page_size=args.limit), timeout=10, metadata=md
        )
        _emit(
            args,
            list(page.changes),
            ("WHEN", "NODE", "KIND", "ACTION", "ACTOR", "REASON"),
            lambda c: (
                _ts(c.change_time),
                c.node_id,
                _kind_name(c.kind),
                fpb.FlagAction.Name(c.action)[len("FLAG_ACTION_") :].lower(),
                c.actor,
                c.reason or "-",
            ),
        )


def _subcloud_row(s: spb.Subcloud) -> Sequence[object]:
    return (
        s.name,
        "yes" if s.isolate else "no",
        spb.SubcloudMembership.Name(s.membership)[len("SUBCLOUD_MEMBERSHIP_") :].lower(),
        ",".join(s.allowed_models) or "*",
        ",".join(s.allowed_regions) or "*",
        s.min_vram_mb or "-",
        ",".join(s.allowed_gpu_models) or "*",
        len(s.banned_node_ids),
    )


MEMBERSHIP = {
    "": spb.SUBCLOUD_MEMBERSHIP_UNSPECIFIED,
    "open": spb.SUBCLOUD_MEMBERSHIP_OPEN,
    "granted": spb.SUBCLOUD_MEMBERSHIP_GRANTED,
}
SUBCLOUD_HEADERS = ("NAME", "ISOLATE", "MEMBERSHIP", "MODELS", "REGIONS", "MIN_VRAM_MB", "GPUS", "BANNED")
MEMBER_HEADERS = ("NODE", "GRANTED", "BY", "REASON")
MEMBERSHIP_CHANGE_HEADERS = ("TIME", "SUBCLOUD", "NODE", "ACTION", "BY", "REASON")


def _member_row(m: spb.SubcloudMember) -> Sequence[object]:
    return (m.node_id, _ts(m.grant_time), m.actor, m.reason or "-")


def _membership_change_row(c: spb.MembershipChange) -> Sequence[object]:
    action = spb.MembershipAction.Name(c.action)[len("MEMBERSHIP_ACTION_") :].lower()
    return (_ts(c.change_time), c.subcloud, c.node_id, action, c.actor, c.reason or "-")


def cmd_subcloud(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = spb_grpc.SubcloudServiceStub(channel)
    md = _metadata(args)
    if args.action == "put":
        subcloud = spb.Subcloud(
            name=args.name,
            isolate=args.isolate,
            membership=MEMBERSHIP[args.membership],
            allowed_models=args.model,
            allowed_regions=args.region,
            min_vram_mb=args.min_vram,
            allowed_gpu_models=args.gpu,
            banned_node_ids=args.ban,
        )
        stored = stub.PutSubcloud(spb.PutSubcloudRequest(subcloud=subcloud), timeout=10, metadata=md).subcloud
        _emit(args, [stored], SUBCLOUD_HEADERS, _subcloud_row)
    elif args.action == "get":
        got = stub.GetSubcloud(spb.GetSubcloudRequest(name=args.name), timeout=10, metadata=md).subcloud
        _emit(args, [got], SUBCLOUD_HEADERS, _subcloud_row)
    elif args.action == "ls":
        listed = stub.ListSubclouds(spb.ListSubcloudsRequest(), timeout=10, metadata=md).subclouds
        _emit(args, list(listed), SUBCLOUD_HEADERS, _subcloud_row)
    elif args.action == "grant":
        added = stub.AddSubcloudMembers(
            spb.AddSubcloudMembersRequest(subcloud=args.name, node_ids=args.nodes, reason=args.reason),
            timeout=10,
            metadata=md,
        ).added
        print(json.dumps({"added": added}) if args.json else f"granted; {added} new member(s)")
    elif args.action == "revoke":
        removed = stub.RemoveSubcloudMembers(
            spb.RemoveSubcloudMembersRequest(subcloud=args.name, node_ids=args.nodes, reason=args.reason),
            timeout=10,
            metadata=md,
        ).removed
        print(json.dumps({"removed": removed}) if args.json else f"revoked; {removed} member(s) removed")
    elif args.action == "members":
        members, token = [], ""
        while True:
            page = stub.ListSubcloudMembers(
                spb.ListSubcloudMembersRequest(subcloud=args.name, page_token=token), timeout=10, metadata=md
            )
            members += list(page.members)
            token = page.next_page_token
            if not token:
                break
        _emit(args, members, MEMBER_HEADERS, _member_row)
    elif args.action == "log":
        changes = stub.ListMembershipChanges(
            spb.ListMembershipChangesRequest(subcloud=args.subcloud, node_id=args.node, page_size=args.limit),
            timeout=10,
            metadata=md,
        ).changes
        _emit(args, list(changes), MEMBERSHIP_CHANGE_HEADERS, _membership_change_row)
    else:  # rm
        deleted = stub.DeleteSubcloud(
            spb.DeleteSubcloudRequest(name=args.name), timeout=10, metadata=md
        ).deleted
        print(
            json.dumps({"deleted": deleted}) if args.json else ("deleted" if deleted else "no such subcloud")
        )


def _node_row(n: node_pb2.Node) -> Sequence[object]:
    return (
        n.spec.node_id,
        n.spec.env,
        n.spec.region or "-",
        node_pb2.Liveness.Name(n.liveness)[9:].lower(),
        node_pb2.NodeState.Name(n.state)[11:].lower(),
        f"{n.leased_slots}/{n.spec.slots}",
        ",".join(n.spec.models),
        ",".join(_kind_name(f.kind) for f in n.flags) or "-",
        _ts(n.last_seen_time),
    )


NODE_HEADERS = ("NODE", "ENV", "REGION", "LIVENESS", "STATE", "LEASES", "MODELS", "FLAGS", "LAST SEEN")


def cmd_nodes(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = npb_grpc.NodeServiceStub(channel)
    md = _metadata(args)
    if args.action == "get":
        _emit(
            args,
            [stub.GetNode(npb.GetNodeRequest(node_id=args.node), timeout=10, metadata=md).node],
            NODE_HEADERS,
            _node_row,
        )
        return
    nodes, token = [], ""
    while True:
        request = npb.ListNodesRequest(
            env=args.env,
            model=args.model,
            region=args.region,
            liveness=node_pb2.Liveness.Name(args.liveness or 0),
            state=node_pb2.NodeState.Name(args.state or 0),
            subcloud=args.subcloud,
            page_size=500,
            page_token=token,
        )
        page = stub.ListNodes(request, timeout=30, metadata=md)
        nodes += list(page.nodes)
        token = page.next_page_token
        if not token:
            break
    _emit(args, nodes, NODE_HEADERS, _node_row)


def cmd_watch(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = npb_grpc.NodeServiceStub(channel)
    request = npb.WatchRequest(env=args.env, region=args.region, types=args.type)
    try:
        for response in stub.Watch(request, metadata=_metadata(args)):
            e = response.event
            if args.json:
                print(json_format.MessageToJson(e, indent=None, preserving_proto_field_name=True), flush=True)
            else:
                kind = node_pb2.NodeEventType.Name(e.type)[len("NODE_EVENT_TYPE_") :].lower()
                print(
                    f"{_ts(e.event_time)}  {e.env}/{e.region or '-'}  {e.node_id}  {kind}  {e.detail}",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livestate", description="livestate control plane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC server (needs livestate[server])", add_help=False)
    sub.add_parser(
        "demo", help="a live demo: server, simulated fleet, dashboard (livestate[demo])", add_help=False
    )
    hash_parser = sub.add_parser("hash-token", help="print the sha256 of a token, for the auth file")
    hash_parser.add_argument("token")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("LIVESTATE_SERVER", "127.0.0.1:50051"))
    common.add_argument("--token", default=os.environ.get("LIVESTATE_TOKEN", ""))
    common.add_argument("--ca", default=os.environ.get("LIVESTATE_CA", ""), help="CA file: use TLS")
    common.add_argument(
        "--cert", default=os.environ.get("LIVESTATE_CERT", ""), help="client certificate (mTLS)"
    )
    common.add_argument("--key", default=os.environ.get("LIVESTATE_KEY", ""), help="client key (mTLS)")
    common.add_argument("--json", action="store_true", help="one JSON object per line")

    flag = sub.add_parser("flag", help="set, clear and list node flags").add_subparsers(
        dest="action", required=True
    )
    p = flag.add_parser("set", parents=[common])
    p.add_argument("node")
    p.add_argument("kind", type=FLAG_KIND)
    p.add_argument("--ttl", type=float, default=0, help="seconds until it lifts by itself")
    p.add_argument("--reason", default="")
    p.add_argument("--message", default="")
    p.add_argument("--start-time", default="", help="MAINTENANCE window start, ISO 8601 with offset")
    p.add_argument("--drain-deadline", type=float, default=0, help="DRAIN: seconds until leases are revoked")
    p = flag.add_parser("clear", parents=[common])
    p.add_argument("node")
    p.add_argument("kind", type=FLAG_KIND)
    p = flag.add_parser("ls", parents=[common])
    p.add_argument("--node", default="")
    p.add_argument("--kind", type=FLAG_KIND, default=0)
    p = flag.add_parser("log", parents=[common], help="the audit trail, newest first")
    p.add_argument("--node", default="")
    p.add_argument("--limit", type=int, default=50)

    subcloud = sub.add_parser("subcloud", help="subcloud policies").add_subparsers(
        dest="action", required=True
    )
    p = subcloud.add_parser("put", parents=[common])
    p.add_argument("name")
    p.add_argument("--isolate", action="store_true")
    p.add_argument(
        "--membership",
        choices=["open", "granted"],
        default="",
        help="granted (the default with --isolate): a node must be granted membership too; "
        "open: listing it is enough",
    )
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--region", action="append", default=[])
    p.add_argument("--min-vram", type=int, default=0)
    p.add_argument("--gpu", action="append", default=[])
    p.add_argument("--ban", action="append", default=[])
    for action in ("get", "rm"):
        subcloud.add_parser(action, parents=[common]).add_argument("name")
    subcloud.add_parser("ls", parents=[common])
    for action in ("grant", "revoke"):
        p = subcloud.add_parser(action, parents=[common], help=f"{action} nodes membership")
        p.add_argument("name")
        p.add_argument("nodes", nargs="+")
        p.add_argument("--reason", default="")
    subcloud.add_parser("members", parents=[common], help="nodes granted membership").add_argument("name")
    p = subcloud.add_parser("log", parents=[common], help="the membership audit trail, newest first")
    p.add_argument("--subcloud", default="")
    p.add_argument("--node", default="")
    p.add_argument("--limit", type=int, default=50)

    nodes = sub.add_parser("nodes", help="list and show nodes").add_subparsers(dest="action", required=True)
    p = nodes.add_parser("ls", parents=[common])
    for name in ("env", "model", "region", "subcloud"):
        p.add_argument(f"--{name}", default="")
    p.add_argument("--liveness", type=LIVENESS, default=0)
    p.add_argument("--state", type=STATE, default=0)
    nodes.add_parser("get", parents=[common]).add_argument("node")

    p = sub.add_parser("watch", parents=[common], help="stream node events")
    p.add_argument("--env", default="")
    p.add_argument("--region", default="")
    p.add_argument("--type", type=EVENT, action="append", default=[])

    p = sub.add_parser(
        "dispatch", parents=[common], help="take jobs from RabbitMQ and place them (livestate[dispatch])"
    )
    p.add_argument(
        "--amqp-url", default=os.environ.get("LIVESTATE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    p.add_argument("--env", required=True, help="the env whose job queues to consume")
    p.add_argument(
        "--models", required=True, help="comma-separated models: livestate.jobs.<env>.<model>.p<N>"
    )
    p.add_argument("--priorities", default="0", help="comma-separated priorities to consume (default 0)")
    p.add_argument("--id", default="dispatch", help="the dispatcher's scheduler_id (one per dispatcher)")
    p.add_argument("--prefetch", type=int, default=100, help="unacked jobs held at most")
    p.add_argument(
        "--max-attempts", type=int, default=5, help="deliveries of one message before it is dead-lettered"
    )
    return parser


def cmd_dispatch(args: argparse.Namespace, channel: grpc.Channel) -> None:
    try:
        from livestate.client.dispatch import Dispatcher
    except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
        raise SystemExit(f"livestate dispatch needs: pip install 'livestate[dispatch]' ({exc})") from exc
    dispatcher = Dispatcher(
        args.amqp_url,
        channel,
        metadata=_metadata(args),
        env=args.env,
        models=[m for m in args.models.split(",") if m],
        priorities=[int(p) for p in args.priorities.split(",") if p],
        dispatcher_id=args.id,
        prefetch=args.prefetch,
        max_attempts=args.max_attempts,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: dispatcher.stop.set())
    dispatcher.run()
    print(json.dumps(dispatcher.counts), file=sys.stderr)


COMMANDS = {
    "flag": cmd_flag,
    "subcloud": cmd_subcloud,
    "nodes": cmd_nodes,
    "watch": cmd_watch,
    "dispatch": cmd_dispatch,
}


def _with_extra(command: str, argv: list[str]) -> int:
    """`serve` and `demo` run the server, which the plain client install does not bring."""
    extra = "server" if command == "serve" else "server,demo"
    try:
        if command == "serve":
            from livestate.server.process.cli import serve_main as run
        else:
            import rich  # noqa: F401

            from livestate.server.process.demo import main as run
    except ImportError as exc:
        print(f"livestate {command} needs: pip install 'livestate[{extra}]' ({exc})", file=sys.stderr)
        return 2
    return run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["serve"], ["demo"]):
        return _with_extra(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "hash-token":
        import hashlib

        print(hashlib.sha256(args.token.encode()).hexdigest())
        return 0
    channel = _channel(args)
    try:
        COMMANDS[args.command](args, channel)
    except grpc.RpcError as err:
        print(f"livestate: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
