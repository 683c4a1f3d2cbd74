"""Fleet-wide rate limits on real Redis: a resource's `rate = "10/min"` over four workers starts
at most ten jobs in any minute, and parks the rest, each deferred once to its reserved start,
rather than spinning on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback import clock, keys
from easeoff.feedback.config import load_config
from easeoff.feedback.levers.rates import RATES_PREFIX, RESERVED_PREFIX, RateLimiter, RateScope
from easeoff.feedback.observe.exporter import read_inputs
from easeoff.feedback.rate import parse_rate
from easeoff.tasks.catalog import record_run
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.registry import TaskError, heavy_task
from tests.conftest import WorkerProcesses, wait_until

RATE, WINDOW = 10, 60.0


def rated_config(write_config) -> Path:  # type: ignore[no-untyped-def]
    path = write_config(interval=0.5)
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        '[resources."shard:1"]\nhosts = ["db1"]\n', f'[resources."shard:1"]\nhosts = ["db1"]\nrate = "{RATE}/min"\n'
    )
    assert f'rate = "{RATE}/min"' in text
    path.write_text(text, encoding="utf-8")
    return path


def started_at(redis: Redis, ids: list[str]) -> list[float]:
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
    return sorted(j.started_at.timestamp() for j in jobs if j is not None and j.started_at is not None)


@pytest.mark.slow
def test_a_rate_per_minute_holds_over_four_workers_without_churn(
    tmp_path: Path, write_config, redis_conn: Redis, shards
) -> None:
    config = rated_config(write_config)
    ids = [record_run.enqueue(shard=1, tag="rated", connection=redis_conn).id for _ in range(25)]
    workers = WorkerProcesses(tmp_path)
    try:
        for _ in range(4):
            workers.start(config, "heavy")
        wait_until(lambda: len(started_at(redis_conn, ids)) >= RATE, 30, what="the first minute's jobs")
        # The rest are parked, each deferred once to its reserved start: nothing spins.
        scheduled = ScheduledJobRegistry("heavy", connection=redis_conn)
        wait_until(lambda: scheduled.count == len(ids) - RATE, 10, what="the rest to be deferred")
        assert RateLimiter(redis_conn).waiting(["shard:1"]) == {"shard:1": len(ids) - RATE}
        # The exporter shows the rate and the jobs waiting on it.
        scraped = read_inputs(redis_conn, load_config(config), clock.now())
        assert scraped.rates == {"shard:1": (RATE / WINDOW, len(ids) - RATE)}
        wait_until(lambda: len(started_at(redis_conn, ids)) >= 2 * RATE, WINDOW + 30, what="the second minute's jobs")
        starts = started_at(redis_conn, ids)
    finally:
        workers.stop_all()

    assert len(starts) == 2 * RATE, "the third minute's jobs started early"
    # At most RATE starts in any window of a minute: the (RATE+1)-th start after any start is
    # a minute or more after it (less a little for the work horse's start after admission).
    for first, later in zip(starts, starts[RATE:], strict=False):
        assert later - first >= WINDOW - 0.25, starts
    deferrals = [
        JobMeta.of(job).deferrals for job in Job.fetch_many(ids, connection=redis_conn, serializer=JSONSerializer)
    ]
    assert max(deferrals) <= 2, deferrals  # once to its reserved start (twice if promotion's jitter took its place)
    assert sorted(deferrals)[:RATE] == [0] * RATE


def test_jobs_over_the_rate_are_given_successive_starts(redis_conn: Redis) -> None:
    """3 starts in any 2 s: ten jobs at once get now, now, now, then reservations 2 s apart in
    threes; one back early keeps its time; those back on time start; a newcomer queues behind."""
    limiter, now = RateLimiter(redis_conn), clock.now()
    scopes = [RateScope("shard:1", parse_rate("3/2s"))]
    given = [limiter.reserve(scopes, f"job{i}", now) for i in range(10)]
    assert given[:3] == [None] * 3
    assert [round(at - now, 3) for at in given[3:]] == [2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 6.0]  # type: ignore[operator]
    assert limiter.reserve(scopes, "job6", now + 2.5) == given[6]  # too early: its time stands
    assert [limiter.reserve(scopes, f"job{i}", now + 2.0) for i in range(3, 6)] == [None] * 3
    newcomer = limiter.reserve(scopes, "job10", now + 2.0)  # queues behind the reservations: beside job9
    assert newcomer is not None and round(newcomer - now, 3) == 6.0
    assert limiter.waiting(["shard:1"]) == {"shard:1": 5}


@pytest.mark.unit
@pytest.mark.parametrize("text", ["x", "0/min", "3/day", "10", "-1/s"])
def test_a_bad_rate_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)
    with pytest.raises(TaskError, match="heavy_task rate"):
        heavy_task(queue="heavy", rate=text)


@pytest.mark.unit
def test_a_damaged_rate_in_a_job_s_meta_falls_back_to_none_rather_than_failing_the_claim() -> None:
    assert JobMeta.from_dict({"task": "t", "rate": "lots"}).rate is None
    assert JobMeta.from_dict({"task": "t", "rate": "6/10s"}).rate == "6/10s"


def test_a_start_given_back_is_that_claim_s_alone_and_only_once(redis_conn: Redis) -> None:
    limiter, now = RateLimiter(redis_conn), clock.now()
    scopes = [RateScope("shard:1", parse_rate("3/2s")), RateScope("task:t", parse_rate("5/2s"))]
    assert limiter.reserve(scopes, "job1", now, start="job1:claim1") is None
    assert limiter.reserve(scopes, "job2", now, start="job2:claim1") is None
    assert limiter.give_back(scopes, "job1:claim1") == 2  # one start in each scope
    assert limiter.give_back(scopes, "job1:claim1") == 0  # already given back
    for scope in ("shard:1", "task:t"):
        assert redis_conn.zrange(RATES_PREFIX + scope, 0, -1) == [b"job2:claim1"]
    # The start given back is room again: two more start now (three in all), the next waits.
    given = [limiter.reserve(scopes, f"job{i}", now, start=f"job{i}:claim2") for i in (1, 3)]
    assert given == [None, None]
    assert limiter.reserve(scopes, "job4", now, start="job4:claim1") is not None


LIMITED_AND_RATED = """
[resources."shard:9"]
hosts = ["db1"]
[resources."shard:9".concurrency]
min = 1
max = 1
"""


def rated_job(redis: Redis, tag: str, seconds: float = 0.0) -> Job:
    """A record_run job (it writes to shard 1's database) on `shard:9`, a resource with one slot
    on the same host, and a task rate of RATE a minute."""
    job = record_run.enqueue(shard=1, tag=tag, seconds=seconds, connection=redis)
    job.meta["easeoff"]["resources"] = ["shard:9"]
    job.meta["easeoff"]["rate"] = f"{RATE}/min"
    job.save_meta()
    return job


def test_jobs_refused_a_slot_spend_no_rate_starts(redis_conn: Redis, write_config, shards, workers) -> None:
    """The only slot held by a long job without a rate: the rated jobs claimed meanwhile wait
    for the slot having spent no start; once it frees, RATE of them start within the minute."""
    config = write_config(interval=0.5, extra=LIMITED_AND_RATED)
    holder = record_run.enqueue(shard=1, tag="holder", seconds=6.0, connection=redis_conn)
    holder.meta["easeoff"]["resources"] = ["shard:9"]
    holder.save_meta()
    starts = RATES_PREFIX + "task:record_run"
    workers.start(config, "heavy")
    wait_until(lambda: redis_conn.zcard(keys.leases_key("shard:9")) == 1, 20, what=f"the holder; {workers.logs()}")
    ids = [rated_job(redis_conn, f"rated{i}").id for i in range(RATE + 2)]
    workers.start(config, "heavy")
    parked = keys.parked_key(keys.SLOT_PARK_PREFIX + "shard:9")
    reserved = RESERVED_PREFIX + "task:record_run"  # jobs deferred for the rate instead

    def waiting() -> int:
        return int(redis_conn.zcard(parked)) + int(redis_conn.zcard(reserved))

    wait_until(lambda: waiting() == len(ids), 20, what=f"the rated jobs to wait; {workers.logs()}")
    assert redis_conn.zcard(starts) == 0, "jobs refused a slot spent rate starts"
    assert redis_conn.zcard(parked) == len(ids)

    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: holder.id in finished.get_job_ids(), 20, what="the holder to end")
    freed = clock.now()
    wait_until(lambda: len(started_at(redis_conn, ids)) >= RATE, 50, what=f"{RATE} rated starts; {workers.logs()}")
    assert started_at(redis_conn, ids)[RATE - 1] - freed < WINDOW
    assert redis_conn.zcard(starts) == RATE
