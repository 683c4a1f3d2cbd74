"""Quantiles a window can actually hold, from samples or from histogram buckets. Pure.

A window of n samples holds the q-quantile only if it expects some samples above it: 20
probes make a p95, not a p99 (their p99 is just their maximum). The rule here is TAIL / (1 - q)
samples, so that about TAIL samples lie above the quantile: a p99 needs 200, a p95 40, a p999
2000. With TAIL = 2 a window's nearest-rank p99 is its third-largest sample, not one outlier;
fewer samples than that is no reading at all (None: the controller holds), never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TAIL = 2  # samples a window must expect above its quantile


def samples_needed(quantile: float) -> int:
    """The fewest samples a window must hold to judge `quantile` (200 for a p99)."""
    return math.ceil(TAIL / (1.0 - quantile) - 1e-9)


def sample_quantile(samples: Sequence[float], quantile: float) -> float | None:
    """Nearest-rank quantile of `samples`, or None when they are too few to hold it."""
    if len(samples) < samples_needed(quantile):
        return None
    ordered = sorted(samples)
    return ordered[max(math.ceil(quantile * len(ordered)) - 1, 0)]


def bucket_quantile(buckets: Sequence[tuple[float, float]], quantile: float) -> float | None:
    """The quantile of a histogram: `buckets` are (upper bound in seconds, count in that bucket),
    ascending; the last bound may be infinite (MariaDB's `TOO LONG`). None when the counts are
    too few to hold the quantile.

    Interpolated inside the bucket that holds it, geometrically (uniform in log time) where the
    bucket has a lower bound above 0 — query_response_time's buckets are powers of its range
    base, so a 1-10 ms bucket's samples sit at its bottom more often than its top, and a linear
    guess would overstate them — and linearly in the first bucket (lower bound 0), as
    Prometheus' histogram_quantile does. A quantile in the unbounded last bucket reads as that
    bucket's lower bound (we know only that it is above it)."""
    total = sum(count for _, count in buckets)
    if total < samples_needed(quantile) or total <= 0:
        return None
    rank = quantile * total
    below, lower = 0.0, 0.0
    for upper, count in buckets:
        if count > 0 and below + count >= rank:
            if math.isinf(upper):
                return lower
            share = (rank - below) / count
            if lower <= 0:
                return upper * share
            return float(lower * (upper / lower) ** share)
        below += count
        lower = upper
    return lower  # rounding left the rank past the last bucket: the highest bound seen
