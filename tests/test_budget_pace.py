"""A budget's duty cycle with real workers: the job that ends hands one waiting job the next
start, at its time. Before, every job refused for the pace came back when it passed, one ran
and the rest were refused again — each refusal a deferral (a deep queue's last job deferred
about as many times as jobs before it) and a herd of claims on every start. The start is handed
ahead of its time, and its worker waits the rest in place."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import msgspec
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from easeoff.feedback import keys
from easeoff.feedback.budget.controller_state import ControllerState
from easeoff.tasks.catalog import record_run
from easeoff.tasks.meta import JobMeta
from tests.conftest import wait_until

DUTY, RUN, JOBS = 0.3, 0.25, 8
# Promotion of due jobs goes at the prober's rounds, once an interval: a start handed at its very
# time began up to an interval late, and a pace never started jobs faster than one an interval.
INTERVAL = 3.0
# A budget whose reading cannot be had (Prometheus nowhere): the controller holds its level,
# never grows on a reading it lacks, so the duty cycle stays where the test puts it.
HELD_BUDGET = """
[resources."shard:1".budget]
latency = "50ms"
latency_source = "prometheus"
prometheus_url = "http://127.0.0.1:1"
metric = "nowhere_seconds"
"""


def test_a_duty_cycle_hands_each_start_to_one_waiting_job(redis_conn: Redis, write_config, workers) -> None:  # type: ignore[no-untyped-def]
    state = ControllerState(level=DUTY, idle_until=0.0)
    redis_conn.hset(keys.budget_key("shard:1"), "controller", msgspec.json.encode(state))
    config_path: Path = write_config(interval=INTERVAL, extra=HELD_BUDGET)
    for _ in range(3):
        workers.start(config_path, "heavy")
    wait_until(lambda: redis_conn.get(keys.duty_key("shard:1")) == str(DUTY).encode(), 15, what="the duty in force")
    jobs = [record_run.enqueue(shard=1, tag=f"p{i}", seconds=RUN, connection=redis_conn) for i in range(JOBS)]

    def finished() -> list[Job] | None:
        fetched = Job.fetch_many([j.id for j in jobs], connection=redis_conn, serializer=JSONSerializer)
        return fetched if all(j is not None and j.ended_at is not None for j in fetched) else None  # type: ignore[misc]

    # Each start waits out the last job's pause, run * (1/duty - 1): about 0.8 s a job in all.
    done = wait_until(finished, 60, interval=0.2, what=f"every paced job finished; {workers.logs()}")
    assert isinstance(done, list)
    deferrals = [JobMeta.of(j).deferrals for j in done]
    # A job refused for the pace waits parked until it is handed a start: once, maybe twice
    # (a fresh claim may take the start first), never once per start before its own.
    assert max(deferrals) <= 2 and sum(deferrals) <= JOBS + 2, deferrals
    ends = sorted(j.ended_at.timestamp() for j in done)  # type: ignore[union-attr]
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    pause = RUN * (1 / DUTY - 1)
    assert statistics.median(gaps) >= 0.8 * (RUN + pause), gaps  # paced: one job a cycle ...
    # ... handed ahead of its time and waited for in place, not left to the next promotion round
    # (a cycle of one interval) nor to the 300 s recheck.
    assert statistics.median(gaps) <= 1.5 * (RUN + pause) < INTERVAL / 2, gaps
