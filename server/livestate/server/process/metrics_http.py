"""The metrics endpoint: `--metrics-listen HOST:PORT` serves Prometheus text at /metrics, and
the status page (status_page.py) at /.

A plain threaded HTTP server on a thread of its own: a scrape never waits on the gRPC event loop
or takes a worker thread, and a slow scraper holds only its own connection. With
PROMETHEUS_MULTIPROC_DIR set (the supervisor of `--processes` N sets it), /metrics sums what
every process wrote there.
"""

from __future__ import annotations

import http.server
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from livestate.server.process import status_page
from livestate.server.process.fleet_metrics import FleetSnapshot

log = logging.getLogger(__name__)


def registry() -> CollectorRegistry:
    """What /metrics shows: this process's metrics, or every process's in multi-process mode."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


Snapshot = Callable[[], FleetSnapshot | None]


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "livestate"
    snapshot: Snapshot = staticmethod(lambda: None)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry()))
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", status_page.render(type(self).snapshot()))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try / or /metrics\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


class MetricsServer:
    """Serves /metrics and / on `listen` ("HOST:PORT"; port 0 picks one: see `port`); the page
    shows what `snapshot()` returns."""

    def __init__(self, listen: str, snapshot: Snapshot = lambda: None) -> None:
        host, _, port = listen.rpartition(":")
        handler = type("Handler", (_Handler,), {"snapshot": staticmethod(snapshot)})
        self._http = http.server.ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(target=self._http.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics at http://%s:%d/metrics", self._http.server_address[0], self.port)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._http.shutdown()
            self._thread.join()
        self._http.server_close()
