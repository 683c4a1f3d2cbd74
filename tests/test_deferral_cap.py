"""Bounded deferral: past its cap a job goes to failed with a clear reason, counted, never dropped.

The resource stays strained throughout, so the job spends its time parked (no churn):
the age cap must still end the parking and fail it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import parse_config
from easeoff.feedback.levers.limits import Refusal
from easeoff.feedback.reasons import Kind, Reason, Verdict
from easeoff.feedback.tally.counters import read_counts
from easeoff.tasks.catalog import record_run
from easeoff.tasks.meta import JobMeta
from easeoff.workers.deferral import Deferral, Expiry, cap_exceeded, plan_deferral
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


@pytest.mark.unit
def test_cap_rules() -> None:
    meta = JobMeta(deferrals=3, first_deferred_at=100.0)
    assert cap_exceeded(meta, 101.0, 2, None) == "deferred 2 times, the cap is 2"
    assert cap_exceeded(meta, 101.0, 3, None) is None
    assert cap_exceeded(replace(meta, max_deferrals=5), 101.0, 2, None) is None  # the task's cap wins
    assert cap_exceeded(replace(meta, max_deferrals=0), 101.0, None, None) == "deferred 2 times, the cap is 0"
    assert cap_exceeded(meta, 200.0, None, 60.0) == "deferred for 100s, the cap is 60s"
    assert cap_exceeded(replace(meta, max_deferral_age=500), 200.0, None, 60.0) is None
    assert cap_exceeded(meta, 1e9, None, None) is None


CONFIG_TEXT = """
[backoff]
max_age = 600
unknown_resource_grace = 30
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
"""
CONFIG = parse_config(CONFIG_TEXT, "plan.toml", {})
STRAIN = Verdict(False, (Reason(Kind.SIGNAL, "db1", 0.9, 0.8, "high", name="connections"),), delay=5.0)


@pytest.mark.unit
def test_a_deferral_counts_sets_its_clocks_and_parks_on_the_jobs_resources() -> None:
    plan = plan_deferral(JobMeta(task="t", resources=("shard:1",)), STRAIN, CONFIG, now=1000.0)
    assert isinstance(plan, Deferral)
    assert plan.meta.deferrals == 1 and plan.meta.first_deferred_at == 1000.0 and plan.meta.expires_at == 1600.0
    assert plan.meta.last_reasons == ["connections:db1 0.9 > high 0.8"]
    assert plan.due == 1005.0 and plan.park_on == ("shard:1",) and plan.unknown == ()
    later = plan_deferral(plan.meta, STRAIN, CONFIG, now=1599.0)
    assert isinstance(later, Deferral) and later.due == 1600.0  # back when its age cap ends, not later
    assert isinstance(plan_deferral(later.meta, STRAIN, CONFIG, now=1601.0), Expiry)


@pytest.mark.unit
def test_what_a_deferred_job_waits_for_follows_the_reason() -> None:
    meta = JobMeta(task="t", resources=("shard:1",))
    paused = Verdict(False, (Reason(Kind.PAUSED, "task:t", detail="ops: x", waits_for="task"),), delay=1.0)
    throttled = Verdict(False, (Reason(Kind.THROTTLED, "task:t", 0.5, detail="ops: x", waits_for="delay"),), 1.0)
    full = Verdict(False, (Refusal("shard:1", 2, 2).reason,), delay=300.0)
    assert plan_deferral(meta, paused, CONFIG, 0.0).park_on == ("task:t",)  # type: ignore[union-attr]
    assert plan_deferral(meta, throttled, CONFIG, 0.0).park_on == ()  # type: ignore[union-attr]
    # A slot, and its task's turn at one (tasks share a tight resource by weight).
    assert plan_deferral(meta, full, CONFIG, 0.0).park_on == ("slot:shard:1", "slot-class:shard:1|t")  # type: ignore[union-attr]


@pytest.mark.unit
def test_a_resource_the_config_lacks_fails_after_the_grace_not_the_max_age() -> None:
    unknown = Verdict(False, (Reason(Kind.UNKNOWN_RESOURCE, "shard:9"),), delay=60.0)
    first = plan_deferral(JobMeta(task="t", resources=("shard:9",)), unknown, CONFIG, now=1000.0)
    assert isinstance(first, Deferral)
    assert first.unknown == ("shard:9",) and first.park_on == ()  # nobody would release it: not parked
    assert first.due == 1030.0 and first.meta.unknown_since == 1000.0
    expired = plan_deferral(first.meta, unknown, CONFIG, now=1030.0)
    assert isinstance(expired, Expiry) and expired.kind == "unknown_resource"
    assert expired.reason.startswith("easeoff: resource 'shard:9' is not in the config (still unknown after 30s)")


@pytest.mark.unit
def test_past_its_age_cap_a_deferral_is_an_expiry_that_names_the_cap_and_the_last_reasons() -> None:
    """The rule the fleet test above shows end to end (max_age 1.5 s, a dead host), decided here
    on its own: the deferral that finds the job past its age cap fails it, counted under the
    first reason's kind, with every reason it was last held for."""
    config = parse_config(CONFIG_TEXT.replace("max_age = 600", "max_age = 1.5"), "plan.toml", {})
    dead = Reason(Kind.PROBE_ERROR, "dead", detail="connection refused")
    verdict = Verdict(False, (dead, STRAIN.reasons[0]), delay=0.2)
    first = plan_deferral(JobMeta(task="record_run", resources=("shard:1",)), verdict, config, now=100.0)
    assert isinstance(first, Deferral) and first.meta.expires_at == 101.5 and first.due == 100.2
    second = plan_deferral(first.meta, verdict, config, now=101.0)
    assert isinstance(second, Deferral) and second.meta.deferrals == 2
    assert plan_deferral(second.meta, verdict, config, now=101.5).due == 101.5  # type: ignore[union-attr]
    expired = plan_deferral(second.meta, verdict, config, now=101.6)
    assert isinstance(expired, Expiry) and expired.kind == "probe_error" and expired.meta.deferrals == 3
    assert expired.reason == (
        "easeoff: deferred for 2s, the cap is 1.5s; last reasons: "
        "probe_error:dead (connection refused); connections:db1 0.9 > high 0.8"
    )


@pytest.mark.unit
def test_past_its_count_cap_a_deferral_is_an_expiry_and_the_tasks_own_cap_beats_the_configs() -> None:
    config = parse_config(CONFIG_TEXT.replace("max_age = 600", "max_deferrals = 2"), "plan.toml", {})
    meta = JobMeta(task="t", resources=("shard:1",))
    plans = []
    for now in (10.0, 20.0, 30.0):
        plan = plan_deferral(meta, STRAIN, config, now=now)
        plans.append(plan)
        meta = plan.meta
    assert [type(p) for p in plans] == [Deferral, Deferral, Expiry]
    assert plans[-1].reason.startswith("easeoff: deferred 2 times, the cap is 2; last reasons: connections:db1")  # type: ignore[union-attr]
    assert plans[-1].kind == "connections"  # type: ignore[union-attr]
    own = replace(meta, max_deferrals=5)  # declared on the task: heavy_task(max_deferrals=5)
    assert isinstance(plan_deferral(own, STRAIN, config, now=40.0), Deferral)
