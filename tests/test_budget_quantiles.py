"""Quantiles a window can hold, and the windows that feed them: pure, no servers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import BudgetConfig
from easeoff.feedback.signals.live_latency import BucketWindow, SampleWindow, burst_size, parse_buckets
from easeoff.feedback.signals.quantiles import bucket_quantile, sample_quantile, samples_needed

pytestmark = pytest.mark.unit

BOUNDS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, math.inf]


def test_a_window_must_hold_two_samples_above_its_quantile() -> None:
    assert (samples_needed(0.95), samples_needed(0.99), samples_needed(0.999)) == (40, 200, 2000)
    assert sample_quantile([0.001] * 199, 0.99) is None  # 20 probes make a p95, 199 no p99
    timings = [i / 1000 for i in range(1, 201)]
    assert sample_quantile(timings, 0.99) == 0.198  # nearest rank: the third-largest of 200
    assert sample_quantile([0.001] * 20, 0.95) is None  # stricter than the design note: 40 for a p95
    assert sample_quantile([0.001] * 40, 0.95) == 0.001


def test_bucket_quantile_interpolates_inside_the_bucket_that_holds_it() -> None:
    counts = [0, 0, 400, 0, 0, 10, 0, 0]  # 400 under 100 µs, 10 in 10-100 ms
    value = bucket_quantile(list(zip(BOUNDS, counts, strict=True)), 0.99)
    assert value is not None and 0.01 < value <= 0.1
    # rank 405.9 is 5.9 of the bucket's 10: log-uniform, 10 ms * 10**0.59
    assert math.isclose(value, 0.01 * 10**0.59, rel_tol=1e-9)
    assert bucket_quantile(list(zip(BOUNDS, [0, 0, 150, 0, 0, 0, 0, 0], strict=True)), 0.99) is None  # too few
    first = bucket_quantile([(0.001, 300.0), (0.01, 0.0)], 0.99)
    assert first is not None and math.isclose(first, 0.00099)  # linear from 0 in the first bucket
    assert bucket_quantile([(0.1, 100.0), (math.inf, 200.0)], 0.99) == 0.1  # only "above 0.1 s" is known


@given(st.lists(st.integers(min_value=0, max_value=500), min_size=len(BOUNDS), max_size=len(BOUNDS)))
def test_the_quantile_lies_in_the_bucket_holding_its_rank(counts: list[int]) -> None:
    buckets = [(b, float(c)) for b, c in zip(BOUNDS, counts, strict=True)]
    value = bucket_quantile(buckets, 0.99)
    if sum(counts) < 200:
        assert value is None
        return
    assert value is not None
    rank, below = 0.99 * sum(counts), 0
    for i, (upper, count) in enumerate(buckets):
        if count > 0 and below + count >= rank:
            lower = BOUNDS[i - 1] if i else 0.0
            assert lower <= value <= upper
            break
        below += count


def test_parse_buckets_reads_too_long_as_unbounded() -> None:
    rows = [("      0.000001", 3), ("      1.000000", 7), ("TOO LONG", 1)]
    assert parse_buckets(rows) == [(1e-6, 3.0), (1.0, 7.0), (math.inf, 1.0)]


def test_bucket_window_diffs_drops_the_probes_own_and_forgets_old_deltas() -> None:
    window = BucketWindow(5.0)
    window.add(0.0, [(0.001, 100.0), (0.1, 10.0)])
    assert window.summed(5.0, 0.0) == [(0.001, 0.0), (0.1, 0.0)]  # one snapshot: nothing yet
    window.add(1.0, [(0.001, 150.0), (0.1, 12.0)], own=3)  # 3 of the 50 fast ones were the probe's
    window.add(2.0, [(0.001, 160.0), (0.1, 12.0)], own=20)  # more own than fast: the rest off slower
    assert window.summed(5.0, 2.0) == [(0.001, 47.0), (0.1, 2.0)]
    window.add(7.5, [(0.001, 170.0), (0.1, 15.0)])
    assert window.summed(5.0, 7.5) == [(0.001, 10.0), (0.1, 3.0)]  # the deltas of 1 s and 2 s are gone
    window.add(8.0, [(0.001, 5.0), (0.1, 0.0)])  # flushed: start afresh
    assert window.summed(5.0, 8.0) == [(0.001, 0.0), (0.1, 0.0)]


def test_sample_window_keeps_its_seconds_and_bursts_fit_the_quantile() -> None:
    window = SampleWindow(5.0)
    window.add(0.0, [0.001] * 10)
    window.add(4.0, [0.002] * 10)
    assert len(window.within(5.0, 4.0)) == 20
    window.add(5.5, [0.003])
    assert window.within(5.0, 5.5) == [0.002] * 10 + [0.003]
    p99 = BudgetConfig(latency_multiple=1.5)  # 200 in 5 s
    assert burst_size([p99], 1.0) == 50 and burst_size([p99], 0.25) == 13
    assert burst_size([BudgetConfig(latency=0.004, quantile=0.999)], 1.0) == 100  # capped
