"""Bounded deferral: past its cap a job goes to failed with a clear reason, counted, never dropped.

The resource stays strained throughout, so the job spends its time parked (no churn):
the age cap must still end the parking and fail it.
"""

from __future__ import annotations

from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.backoff import deferral_cap_exceeded
from easeoff.feedback.counters import read_counts
from easeoff.tasks.catalog import record_run
from tests.conftest import WorkerProcesses, wait_until
from tests.placement import misplaced


def test_deferral_cap_sends_the_job_to_failed_with_a_reason(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(
        shard2_hosts='["db1", "dead"]',
        interval=0.2,
        backoff_base=0.2,
        backoff_cap=0.3,
        backoff_extra="max_age = 1.5",
    )
    job = record_run.enqueue(shard=2, tag="capped", connection=redis_conn)
    workers.start(config, "heavy")
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in failed.get_job_ids(), 20, what="the job to hit its deferral cap")

    stored = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    assert stored.get_status() == "failed"
    assert stored.meta["easeoff"]["deferrals"] >= 2
    result = stored.latest_result()
    assert result is not None
    assert "the cap is 1.5s" in result.exc_string
    assert "probe_error:dead" in result.exc_string
    expired = read_counts(redis_conn)["expired"]
    assert [(c.queue, c.task, c.reason, c.value) for c in expired] == [("heavy", "record_run", "probe_error", 1)]
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


def test_cap_rules() -> None:
    info = {"deferrals": 3, "first_deferred_at": 100.0}
    assert deferral_cap_exceeded(info, 101.0, 2, None) == "deferred 2 times, the cap is 2"
    assert deferral_cap_exceeded(info, 101.0, 3, None) is None
    assert deferral_cap_exceeded(info | {"max_deferrals": 5}, 101.0, 2, None) is None  # the task's cap wins
    assert deferral_cap_exceeded(info, 200.0, None, 60.0) == "deferred for 100s, the cap is 60s"
    assert deferral_cap_exceeded(info | {"max_deferral_age": 500}, 200.0, None, 60.0) is None
    assert deferral_cap_exceeded(info, 1e9, None, None) is None
