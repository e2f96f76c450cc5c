"""Summaries the benchmark scripts print."""

from __future__ import annotations

import statistics


def latency_summary(seconds: list[float], digits: int = 2) -> str:
    """``median X ms, p99 Y ms, max Z ms (n=N)`` of a list of durations in seconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered) * 1000:.{digits}f} ms, p99 {p99 * 1000:.{digits}f} ms, "
        f"max {ordered[-1] * 1000:.{digits}f} ms (n={len(ordered)})"
    )
