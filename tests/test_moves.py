"""The atomic job moves on real Redis: claim, defer, promote leave each job in one place."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.counters import counter_key
from easeoff.tasks.catalog import noop
from easeoff.tasks.registry import META_KEY
from easeoff.workers.moves import JobMoves
from tests.placement import misplaced


def test_claim_defer_promote_round_trip(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    job = noop.enqueue(shard=1, connection=redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)

    claim = moves.claim([queue], "w1", ttl=60)
    assert claim is not None and claim.job_id == job.id and claim.queue_name == "heavy"
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}
    assert redis_conn.zscore(StartedJobRegistry("heavy", connection=redis_conn).key, claim.execution.composite_key)
    fetched = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    assert fetched.get_status() == JobStatus.STARTED and fetched.worker_name == "w1"

    fetched.meta[META_KEY]["deferrals"] = 1
    due = time.time() + 30
    assert moves.defer(fetched, queue, claim.execution, due, "noop", ["connections:db1 0.9 > high 0.8"])
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}
    scheduled = ScheduledJobRegistry("heavy", connection=redis_conn)
    assert abs(redis_conn.zscore(scheduled.key, job.id) - due) < 0.01
    again = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    assert again.get_status() == JobStatus.SCHEDULED
    assert again.meta[META_KEY]["deferrals"] == 1
    assert again.retries_left is None  # a deferral spends no retry
    assert redis_conn.hget(counter_key("deferred"), "heavy|noop|connections") == b"1"
    assert not redis_conn.exists(claim.execution.key)

    assert moves.promote([queue], now=due - 1) == 0  # not due yet
    assert moves.promote([queue], now=due + 1) == 1
    assert redis_conn.lrange(queue.key, 0, -1) == [job.id.encode()]
    assert Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).get_status() == JobStatus.QUEUED
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


def test_defer_refuses_a_job_no_longer_claimed(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    job = noop.enqueue(shard=1, connection=redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    claim = moves.claim([queue], "w1", ttl=60)
    assert claim is not None
    redis_conn.zrem(StartedJobRegistry("heavy", connection=redis_conn).key, claim.execution.composite_key)
    assert not moves.defer(job, queue, claim.execution, time.time() + 5, "noop", ["connections:db1"])
    assert redis_conn.zcard(ScheduledJobRegistry("heavy", connection=redis_conn).key) == 0


def test_claim_takes_queues_in_priority_order_and_skips_deleted_jobs(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    low = Queue("low", connection=redis_conn, serializer=JSONSerializer)
    high = Queue("high", connection=redis_conn, serializer=JSONSerializer)
    low_job = low.enqueue("easeoff.tasks.catalog.noop", 1)
    gone = high.enqueue("easeoff.tasks.catalog.noop", 1)
    kept = high.enqueue("easeoff.tasks.catalog.noop", 1)
    gone.delete(remove_from_queue=False)
    first = moves.claim([high, low], "w1", ttl=60)
    second = moves.claim([high, low], "w1", ttl=60)
    third = moves.claim([high, low], "w1", ttl=60)
    assert [c.job_id for c in (first, second) if c] == [kept.id, low_job.id]
    assert third is None


def test_unreadable_payload_fails_with_reason(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    job = queue.enqueue("easeoff.tasks.catalog.noop", 1)
    claim = moves.claim([queue], "w1", ttl=60)
    assert claim is not None
    assert moves.fail_claimed(job.id, queue, claim.execution, "cannot load job payload")
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}
    assert redis_conn.hget(job.key, "status") == b"failed"
