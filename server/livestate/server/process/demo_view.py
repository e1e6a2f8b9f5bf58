"""The demo's dashboard (rich), or one plain line a second (`--plain`, or no terminal)."""

from __future__ import annotations

import datetime
import sys
import threading
import time
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from livestate.server.process.fleet_metrics import FleetSnapshot
from livestate.server.process.status_page import LIVENESS

if TYPE_CHECKING:
    from livestate.server.process.app import LivestateServer
    from livestate.server.process.demo import Stats


def _by_liveness(snapshot: FleetSnapshot | None) -> dict[str, int]:
    out = dict.fromkeys(LIVENESS, 0)
    for (_, _, live), n in snapshot.nodes.items() if snapshot else ():
        out[live] = out.get(live, 0) + int(n)
    return out


def line(snapshot: FleetSnapshot | None, stats: Stats, elapsed: float) -> str:
    rate, p99 = stats.recent()
    live = _by_liveness(snapshot)
    flags = " ".join(
        f"{kind.removeprefix('FLAG_KIND_')}={int(n)}"
        for (kind,), n in sorted((snapshot.flags if snapshot else {}).items())
        if n
    )
    return (
        f"t={elapsed:4.0f}s online={live['ONLINE']} suspect={live['SUSPECT']} offline={live['OFFLINE']} "
        f"matches/s={rate:.1f} p99={p99:.1f}ms matched={stats.matched} released={stats.released} "
        f"failed={stats.failed} lost={stats.lost} no-node={stats.no_node} errors={stats.errors} "
        f"died={stats.deaths} back={stats.returns} flags: {flags or 'none'}"
    )


def show(
    server: LivestateServer, stats: Stats, page: str, done: threading.Event, until: float, *, plain: bool
) -> None:
    """Shows the demo until `done` is set or `until` (monotonic) passes."""
    started = time.monotonic()
    fleet = server.fleet_metrics
    assert fleet is not None
    if plain or not sys.stdout.isatty():
        valkey = server.embedded.proc.pid if server.embedded and server.embedded.proc else None
        print(
            f"livestate demo: gRPC on 127.0.0.1:{server.port}, status page {page}, "
            f"embedded valkey pid {valkey}",
            flush=True,
        )
        while not done.wait(1.0) and time.monotonic() < until:
            print(line(fleet.snapshot, stats, time.monotonic() - started), flush=True)
        return

    with Live(
        _render(fleet.snapshot, stats, page, 0.0, server.port), refresh_per_second=2, screen=False
    ) as live:
        while not done.wait(0.5) and time.monotonic() < until:
            live.update(_render(fleet.snapshot, stats, page, time.monotonic() - started, server.port))


def _render(snapshot: FleetSnapshot | None, stats: Stats, page: str, elapsed: float, port: int) -> Group:
    colors = {"ONLINE": "green", "SUSPECT": "yellow", "OFFLINE": "red"}
    regions = Table(title="nodes by region", expand=True)
    regions.add_column("region")
    for live in LIVENESS:
        regions.add_column(f"[{colors[live]}]{live}", justify="right")
    where = sorted({(env, region) for env, region, _ in (snapshot.nodes if snapshot else {})})
    for env, region in where:
        assert snapshot is not None
        regions.add_row(region, *(str(int(snapshot.nodes.get((env, region, live), 0))) for live in LIVENESS))

    rate, p99 = stats.recent()
    scheduling = Table(title="scheduling (last 10 s)", expand=True)
    for name in ("matches/s", "p99 ms", "matched", "released", "failed", "lost", "no node", "errors"):
        scheduling.add_column(name, justify="right")
    scheduling.add_row(
        f"{rate:.1f}",
        f"{p99:.1f}",
        str(stats.matched),
        str(stats.released),
        str(stats.failed),
        str(stats.lost),
        str(stats.no_node),
        str(stats.errors),
    )

    models = Table(title="by model", expand=True)
    for name, justify in (("model", "left"), ("idle nodes", "right"), ("waiting jobs", "right")):
        models.add_column(name, justify=justify)  # type: ignore[arg-type]
    idle: dict[str, float] = {}
    waiting: dict[str, float] = {}
    for (_, _, model), n in snapshot.idle.items() if snapshot else ():
        idle[model] = idle.get(model, 0) + n
    for (_, _, model), n in snapshot.depth.items() if snapshot else ():
        waiting[model] = waiting.get(model, 0) + n
    for model in sorted(idle.keys() | waiting.keys()):
        models.add_row(model, str(int(idle.get(model, 0))), str(int(waiting.get(model, 0))))

    flags = Table(title="flags in force", expand=True)
    flags.add_column("kind")
    flags.add_column("nodes", justify="right")
    for (kind,), n in sorted((snapshot.flags if snapshot else {}).items()):
        if n:
            flags.add_row(kind.removeprefix("FLAG_KIND_"), str(int(n)))

    events = Table(title="latest node events", expand=True)
    for name in ("when", "event", "node", "detail"):
        events.add_column(name)
    for e in (snapshot.events if snapshot else [])[:8]:
        when = datetime.datetime.fromtimestamp(e.at_ms / 1000).strftime("%H:%M:%S")
        events.add_row(when, e.kind, e.node_id, e.detail[:60])

    head = (
        f"[b]livestate demo[/b]  {elapsed:.0f}s  gRPC 127.0.0.1:{port}  status page {page}\n"
        f"fleet churn: {stats.deaths} nodes died, {stats.returns} came back; an operator pauses one now "
        "and then and shadow-banned one.  Ctrl-C to stop."
    )
    return Group(Panel(head), regions, scheduling, models, flags, events)
