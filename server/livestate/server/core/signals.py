"""SIGTERM and SIGINT as a stop request, for `serve` and the --processes supervisor alike."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_requested(what: str) -> threading.Event:
    """An Event set (and logged with `what` will happen) on the first SIGTERM or SIGINT."""
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: %s", signum, what)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return done
