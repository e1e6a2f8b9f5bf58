"""Long-lived server streams that outlive their connection: reopened after a failure, ended by
an event rather than by abandoning the iterator (shared by Scheduler.assignments and Admin.watch)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

log = logging.getLogger(__name__)

# A stream that ends with one of these is opened again (after a backoff).
RECONNECT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
)


def reopened(
    open_call: Callable[[], Any],
    stop: threading.Event,
    on_error: Callable[[grpc.RpcError], bool],
    max_backoff: float = 5.0,
) -> Iterator[Any]:
    """Yields the items of the calls `open_call()` opens, one after another, until `stop` is set
    (the open call is cancelled then, so a consumer blocked on it wakes). When a call fails,
    `on_error(err)` decides: raise to end, True to open the next call at once, False to open it
    after a backoff (doubling up to `max_backoff` while calls keep failing)."""
    current: list[Any] = []
    done = threading.Event()

    def cancel_on_stop() -> None:
        while not done.is_set():
            if stop.wait(0.1):
                for call in current:
                    call.cancel()
                return

    threading.Thread(target=cancel_on_stop, name="stream-stop", daemon=True).start()
    backoff = 0.1
    try:
        while not stop.is_set():
            call = open_call()
            current[:] = [call]
            if stop.is_set():
                call.cancel()
            try:
                for item in call:
                    if stop.is_set():  # what arrived after the stop is for the next reader
                        return
                    backoff = 0.1
                    yield item
            except grpc.RpcError as err:
                if stop.is_set():
                    return
                if on_error(err):
                    continue
                log.info("stream ended (%s); opening it again in %.1fs", err.code(), backoff)
                stop.wait(backoff)
                backoff = min(max_backoff, backoff * 2)
            finally:
                call.cancel()
    finally:
        done.set()


def reconnect_or_raise(err: grpc.RpcError) -> bool:
    """on_error for streams with nothing to handle: back off and reopen on RECONNECT codes."""
    if err.code() in RECONNECT:
        return False
    raise err
