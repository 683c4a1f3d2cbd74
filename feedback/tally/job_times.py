"""How long jobs run and how long they waited to start, as Prometheus histograms kept in Redis.

The worker already writes the fleet's counters in the transaction that ends a job
(workers/job_endings.py); a job's run time and queue wait go into that same transaction, so the
hot path gains commands in a pipeline it sends anyway, not a round trip. Each histogram is one
counter hash (`easeoff:counters:run_seconds`, `easeoff:counters:queue_wait_seconds`) whose
fields are `queue|task|le` (the count of jobs in that bucket alone, not cumulative: one
HINCRBY a job) and `queue|task|sum` (HINCRBYFLOAT). The exporter adds the buckets up on a scrape.

Run time: from the start of the run that ended to its end. Queue wait: from the job's enqueue
(rq's `enqueued_at`, its creation when it was scheduled) to the start of that run, deferrals and
earlier runs included: how long the work waited to be done.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
import msgspec.structs

from easeoff.feedback.keys import counter_key
from easeoff.feedback.tally.counters import Labels, counter_field

# Upper bounds in seconds, for heavy jobs: a tenth of a second to two hours (and +Inf).
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
INF = "+Inf"
SUM = "sum"
KINDS = ("run_seconds", "queue_wait_seconds")


class Histogram(msgspec.Struct, frozen=True):
    queue: str
    task: str
    buckets: list[tuple[str, int]]  # cumulative, by upper bound, ending with +Inf (Prometheus' shape)
    sum: float


def bucket_label(seconds: float) -> str:
    """The upper bound of the one bucket `seconds` falls in, as Prometheus writes it."""
    index = bisect.bisect_left(BUCKETS, seconds)
    return INF if index == len(BUCKETS) else _le(BUCKETS[index])


def observe(pipeline: Any, kind: str, queue: str, task: str, seconds: float) -> None:
    """Count one observation into `pipeline` (two commands; no round trip of its own)."""
    seconds = max(seconds, 0.0)
    pipeline.hincrby(counter_key(kind), counter_field(queue, task, bucket_label(seconds)), 1)
    pipeline.hincrbyfloat(counter_key(kind), counter_field(queue, task, SUM), seconds)


def record_job(
    pipeline: Any,
    queue: str,
    task: str,
    enqueued_at: datetime | None,
    started_at: datetime | None,
    ended_at: datetime | None,
) -> None:
    """The ending run's time and the job's wait before it, whichever the job's clocks allow."""
    for kind, since, until in (("run_seconds", started_at, ended_at), ("queue_wait_seconds", enqueued_at, started_at)):
        if since is None or until is None:
            continue
        try:
            seconds = (until - since).total_seconds()
        except TypeError:  # one clock naive, the other not: no guess
            continue
        observe(pipeline, kind, queue, task, seconds)


def parse(raw: Mapping[bytes, bytes]) -> list[Histogram]:
    """One counter hash as histograms per queue and task, buckets made cumulative."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    sums: dict[tuple[str, str], float] = {}
    for field, value in raw.items():
        queue, task, label = msgspec.structs.astuple(Labels.of_field(field))  # the bucket is the third label
        if label == SUM:
            sums[(queue, task)] = float(value)
        else:
            counts.setdefault((queue, task), {})[label] = int(value)
    histograms = []
    for (queue, task), by_label in sorted(counts.items()):
        histograms.append(Histogram(queue, task, cumulative(by_label), sums.get((queue, task), 0.0)))
    return histograms


def cumulative(by_label: Mapping[str, int]) -> list[tuple[str, int]]:
    """Per-bucket counts (any bound this version does not know counts in the next one up)."""
    bounds = [*(_le(b) for b in BUCKETS), INF]
    per_bucket = dict.fromkeys(bounds, 0)
    for label, count in by_label.items():
        per_bucket[bucket_label(_bound(label))] += count
    running, out = 0, []
    for label in bounds:
        running += per_bucket[label]
        out.append((label, running))
    return out


def _bound(label: str) -> float:
    try:
        return math.inf if label == INF else float(label)
    except ValueError:
        return math.inf


def _le(bound: float) -> str:
    return repr(float(bound))
