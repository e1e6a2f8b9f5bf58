"""The one percentile every bench figure is reported with."""

from __future__ import annotations

from collections.abc import Sequence


def pct_ms(seconds: Sequence[float], q: float) -> float:
    """The q-quantile (0..1; 1 is the worst) of durations in seconds, in milliseconds."""
    if not seconds:
        return float("nan")
    return sorted(seconds)[min(len(seconds) - 1, int(len(seconds) * q))] * 1000
