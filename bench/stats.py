"""Small, exact statistics for benchmark figures: percentiles, ratios, windows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    Matches numpy's default ("linear"); NaN for no values.
    """
    ordered = sorted(values)
    if not ordered:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p90, p99 and max of a sample (NaN percentiles when it is empty)."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def ratio(value: float, baseline: float) -> float:
    """value / baseline; NaN when the baseline is zero or missing."""
    if not baseline or math.isnan(baseline):
        return math.nan
    return value / baseline


def count_in(times: Iterable[float], start: float, length: float) -> int:
    """How many of `times` fall in [start, start + length)."""
    end = start + length
    return sum(1 for t in times if start <= t < end)


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most events in any `window`-long stretch (a sliding window over sorted times)."""
    ordered = sorted(times)
    best = 0
    low = 0
    for high, t in enumerate(ordered):
        while ordered[low] <= t - window:
            low += 1
        best = max(best, high - low + 1)
    return best
