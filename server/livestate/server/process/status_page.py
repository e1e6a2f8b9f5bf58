"""The status page: `/` on the metrics port, a read-only view of the fleet for a person.

One self-contained HTML document (no script, no stylesheet or font from elsewhere, no build
step) rendered from the latest FleetSnapshot (fleet_metrics.py), so a page view costs Redis
nothing; it reloads itself every REFRESH seconds.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable, Sequence

from livestate.server.process.fleet_metrics import FleetSnapshot

REFRESH = 5
LIVENESS = ("ONLINE", "SUSPECT", "OFFLINE")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #fafbfc; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
.when { color: #5b6475; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #dde1e8; padding: .25em .7em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ONLINE { color: #0a7d32; } .SUSPECT { color: #a15c00; } .OFFLINE { color: #b3261e; }
.none { color: #5b6475; font-style: italic; }
"""


def _cell(value: object, numeric: bool) -> str:
    if numeric:
        return f'<td class="n">{html.escape(_num(value))}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int) -> str:
    body = [
        "<tr>" + "".join(_cell(v, i >= numeric_from) for i, v in enumerate(row)) + "</tr>" for row in rows
    ]
    if not body:
        return '<p class="none">none</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _num(value: object) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return f"{int(value)}" if isinstance(value, int | float) else str(value)


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fleet(snapshot: FleetSnapshot) -> list[str]:
    regions = sorted({(env, region) for env, region, _ in snapshot.nodes})
    counts = {where: [snapshot.nodes.get((*where, live), 0.0) for live in LIVENESS] for where in regions}
    totals = [sum(row[i] for row in counts.values()) for i in range(len(LIVENESS))]
    heads = " ".join(
        f'<span class="{live}">{live}</span> {_num(n)}' for live, n in zip(LIVENESS, totals, strict=True)
    )
    rows = [[*where, *row] for where, row in counts.items()]
    return [f"<h2>Fleet</h2><p>{heads}</p>", _table(["env", "region", *LIVENESS], rows, 2)]


def render(snapshot: FleetSnapshot | None) -> bytes:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>livestate status</title><style>{_STYLE}</style></head><body>",
        "<h1>livestate</h1>",
    ]
    if snapshot is None:
        parts.append('<p class="when">No reading of the fleet yet: Redis has not answered since start.</p>')
        return "\n".join([*parts, "</body></html>"]).encode()
    parts.append(f'<p class="when">As of {_time(snapshot.taken_ms)}; reloads every {REFRESH} s.</p>')
    parts += _fleet(snapshot)

    idle = [(*key, n) for key, n in sorted(snapshot.idle.items())]
    parts += ["<h2>Idle nodes by model</h2>", _table(["env", "region", "model", "with a free slot"], idle, 3)]

    queues = [(*key, n, snapshot.head_wait.get(key, 0.0)) for key, n in sorted(snapshot.depth.items()) if n]
    headers = ["env", "region", "model", "waiting", "first in line waited (s)"]
    parts += ["<h2>Waiting jobs</h2>", _table(headers, queues, 3)]

    flags = [(kind.removeprefix("FLAG_KIND_"), n) for (kind,), n in sorted(snapshot.flags.items()) if n]
    parts += ["<h2>Flags in force</h2>", _table(["kind", "nodes"], flags, 1)]

    events = [(_time(e.at_ms), e.kind, e.node_id, f"{e.env}/{e.region}", e.detail) for e in snapshot.events]
    parts += ["<h2>Recent node events</h2>", _table(["when", "event", "node", "where", "detail"], events, 5)]
    return "\n".join([*parts, "</body></html>"]).encode()
