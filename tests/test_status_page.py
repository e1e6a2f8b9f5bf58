"""The status page at / on the metrics port: the fleet by region and liveness, queues, flags in
force and recent events, from the latest fleet read; in headless Chromium too, when present."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import urllib.request
import uuid

import pytest

from conftest import ServerFactory
from harness import Harness, enqueue
from livestate.server.process import status_page
from livestate.server.process.fleet_metrics import Event, FleetSnapshot
from livestate.v1 import flag_pb2
from livestate.v1 import flag_service_pb2 as fpb


def _page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
        return str(reply.read().decode())


def _text(page: str) -> str:
    """What a person reads: the page without tags, whitespace folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.split("</style>", 1)[-1])).split())


@pytest.fixture
def shown(make_server: ServerFactory) -> tuple[Harness, str]:
    """A server with a region of 3 nodes (one paused), a job waiting, and a fleet read done."""
    ls = make_server(metrics_listen="127.0.0.1:0")
    region = f"page-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        ls.register(f"{region}-n{i}", region=region)
    pause = fpb.SetFlagRequest(node_id=f"{region}-n0", kind=flag_pb2.FLAG_KIND_PAUSE, reason="thermal")
    ls.flags.SetFlag(pause, timeout=5)
    enqueue(ls, "job-waiting", model="model-nobody-serves", regions=[region])
    assert ls.server.fleet_metrics is not None
    ls.server.fleet_metrics.read()
    return ls, region


def _metrics_port(ls: Harness) -> int:
    assert ls.server.metrics_http is not None
    return ls.server.metrics_http.port


def test_the_page_shows_the_fleet_queues_flags_and_events(shown: tuple[Harness, str]) -> None:
    ls, region = shown
    page = _page(_metrics_port(ls))
    assert '<meta http-equiv="refresh"' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    text = _text(page)
    assert f"test {region} 3 0 0" in text  # env, region, ONLINE, SUSPECT, OFFLINE
    assert f"test {region} llama-3-8b 3" in text  # idle nodes by model
    assert f"test {region} model-nobody-serves 1" in text  # waiting jobs
    assert "PAUSE 1" in text
    assert f"ONLINE {region}-n2 test/{region} registered" in text


def test_before_the_first_read_the_page_says_so(make_server: ServerFactory) -> None:
    ls = make_server(metrics_listen="127.0.0.1:0")
    assert ls.server.fleet_metrics is not None
    ls.server.fleet_metrics.snapshot = None
    assert "No reading of the fleet yet" in _text(_page(_metrics_port(ls)))


def test_text_from_the_fleet_is_escaped() -> None:
    # Names are validated to a safe alphabet, but event details carry free text (flag reasons).
    event = Event(at_ms=0, kind="FLAGGED", node_id="gpu-x", env="e", region="r", detail="<b>hot</b> & loud")
    snapshot = FleetSnapshot(0, {}, {}, {}, {}, {}, [event])
    page = status_page.render(snapshot).decode()
    assert "<b>hot</b>" not in page and "&lt;b&gt;hot&lt;/b&gt; &amp; loud" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed here")
def test_headless_chromium_renders_the_page(shown: tuple[Harness, str]) -> None:
    ls, region = shown
    assert CHROMIUM is not None
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            f"http://127.0.0.1:{_metrics_port(ls)}/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    text = _text(dom)
    assert "livestate" in text
    assert f"test {region} 3 0 0" in text
    assert "PAUSE 1" in text
