"""The atomic job moves on real Redis: claim, defer, promote leave each job in one place."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from rq import Queue
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.keys import SWEEP_AFTER, cooldown_key, parked_key
from easeoff.feedback.reasons import Kind, Reason
from easeoff.feedback.tally.counters import counter_field, counter_key
from easeoff.tasks.catalog import noop
from easeoff.tasks.meta import META_KEY
from easeoff.workers.ending_moves import MOST_ABANDONED_REQUEUES, POISON_REASON
from easeoff.workers.move_scripts import DEFER
from easeoff.workers.moves import LAPSES_AT_FIELD, JobMoves
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
    assert moves.defer(
        fetched, queue, claim.execution, due, "noop", [Reason(Kind.SIGNAL, "db1", 0.9, 0.8, "high", name="connections")]
    )
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
    assert not moves.defer(
        job, queue, claim.execution, time.time() + 5, "noop", [Reason(Kind.SIGNAL, "db1", name="connections")]
    )
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


def test_the_claim_records_exactly_rqs_execution_fields(redis_conn: Redis) -> None:
    """claim.lua re-creates rq's Execution hash by hand: it must hold what rq's own Execution
    writes, field for field, and rq must read it back as an execution of the job."""
    moves = JobMoves(redis_conn)
    job = noop.enqueue(shard=1, connection=redis_conn)
    claim = moves.claim([Queue("heavy", connection=redis_conn, serializer=JSONSerializer)], "w1", ttl=60)
    assert claim is not None
    written = {k.decode() for k in redis_conn.hkeys(claim.execution.key)}
    rqs_own = Execution(id="x", job_id=job.id, connection=redis_conn, worker_name="w1").serialize()
    assert written == set(rqs_own)
    fetched = Execution.fetch(id=claim.execution.id, job_id=job.id, connection=redis_conn)
    assert fetched.worker_name == "w1" and fetched.job_id == job.id
    assert [e.id for e in ExecutionRegistry(job_id=job.id, connection=redis_conn).get_executions()] == [
        claim.execution.id
    ]


def test_promote_reparks_a_job_whose_resource_cools_and_release_brings_it_back(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    job = noop.enqueue(shard=1, connection=redis_conn)
    claim = moves.claim([queue], "w1", ttl=60)
    assert claim is not None
    now = time.time()
    assert moves.defer(
        job, queue, claim.execution, now, "noop", [Reason(Kind.SIGNAL, "db1", name="connections")], ["shard:1"]
    )
    redis_conn.set(cooldown_key("shard:1"), "strained", px=60_000)
    assert moves.promote([queue], now=now + 1) == 0  # due, but its resource cools: parked, not queued
    assert redis_conn.zscore(ScheduledJobRegistry("heavy", connection=redis_conn).key, job.id) > now + 3600
    assert redis_conn.zrange(parked_key("shard:1"), 0, -1) == [f"{job.id}|heavy".encode()]
    redis_conn.delete(cooldown_key("shard:1"))
    assert moves.release("shard:1") == 1
    assert redis_conn.lrange(queue.key, 0, -1) == [job.id.encode()]
    assert not redis_conn.exists(parked_key("shard:1"))
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


def test_recover_requeues_the_idempotent_fails_the_rest_and_labels_like_counter_field(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    again = queue.enqueue_call("easeoff.tasks.catalog.noop", meta={META_KEY: {"task": "a|b", "idempotent": True}})
    once = queue.enqueue_call("easeoff.tasks.catalog.noop", meta={META_KEY: {"task": "plain"}})
    claims = [moves.claim([queue], "w1", ttl=1) for _ in range(2)]
    assert all(claims)
    redis_conn.delete(SWEEP_AFTER)  # Redis has been up all along: absence may be judged
    assert moves.recover_abandoned([queue], now=time.time() + 120) == 2
    assert redis_conn.lrange(queue.key, 0, -1) == [again.id.encode()]
    assert FailedJobRegistry("heavy", connection=redis_conn).get_job_ids() == [once.id]
    counted = {k.decode(): int(v) for k, v in redis_conn.hgetall(counter_key("abandoned")).items()}
    assert counted == {counter_field("heavy", "a|b", "requeued"): 1, counter_field("heavy", "plain", "failed"): 1}
    assert misplaced(redis_conn, ["heavy"], [again.id, once.id]) == {}


def test_a_job_abandoned_again_and_again_fails_as_a_poison_job_until_ops_requeue_it(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    job = queue.enqueue_call("easeoff.tasks.catalog.noop", meta={META_KEY: {"task": "crashy", "resumable": True}})

    def abandon() -> None:
        claim = moves.claim([queue], "w1", ttl=1)
        assert claim is not None and claim.job_id == job.id
        redis_conn.delete(SWEEP_AFTER)
        assert moves.recover_abandoned([queue], now=time.time() + 120) == 1

    for _ in range(MOST_ABANDONED_REQUEUES):
        abandon()
        assert redis_conn.lrange(queue.key, 0, -1) == [job.id.encode()]
    abandon()  # once more than it may be requeued
    assert redis_conn.llen(queue.key) == 0
    assert FailedJobRegistry("heavy", connection=redis_conn).get_job_ids() == [job.id]
    assert redis_conn.hget(Job.key_for(job.id), "exc_info") == POISON_REASON.encode()
    counted = {k.decode(): int(v) for k, v in redis_conn.hgetall(counter_key("abandoned")).items()}
    assert counted == {
        counter_field("heavy", "crashy", "requeued"): MOST_ABANDONED_REQUEUES,
        counter_field("heavy", "crashy", "failed"): 1,
    }
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}

    assert moves.requeue_failed(job.id, "heavy")  # ops' requeue: a fresh count
    abandon()
    assert redis_conn.lrange(queue.key, 0, -1) == [job.id.encode()]


def test_a_deferral_keeps_rqs_ttl_deadline_and_a_started_jobs_waits_anew(redis_conn: Redis) -> None:
    """rq's `ttl` counts from the enqueue: the claim keeps the key while the job is ours and notes
    the deadline (Redis's clock); a deferral at the claim gives the key that deadline back, or
    lets a job whose deadline passed go (nothing scheduled, nothing parked); a job that had
    started gets a full ttl again, as rq's retry gives it."""
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    reasons = [Reason(Kind.SIGNAL, "db1", name="connections")]

    def claimed(ttl: int) -> tuple[Job, Execution]:
        job = noop.options(connection=redis_conn, ttl=ttl).delay(shard=1)
        claim = moves.claim([queue], "w1", ttl=60)
        assert claim is not None and claim.job_id == job.id and redis_conn.ttl(job.key) == -1  # kept while ours
        return Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer), claim.execution

    job, execution = claimed(ttl=100)
    lapses_at = int(redis_conn.hget(job.key, LAPSES_AT_FIELD))
    seconds, micros = redis_conn.time()
    assert 99_000 < lapses_at - (seconds * 1000 + micros // 1000) <= 100_000
    redis_conn.hset(job.key, LAPSES_AT_FIELD, lapses_at - 40_000)  # as if enqueued 40 s ago
    assert moves.defer(job, queue, execution, time.time() + 5, "noop", reasons, ["shard:1"])
    assert redis_conn.pexpiretime(job.key) == lapses_at - 40_000  # its first deadline, not a fresh 100 s

    job, execution = claimed(ttl=100)
    redis_conn.hset(job.key, LAPSES_AT_FIELD, 1)  # its wait lapsed while it was claimed
    assert moves.defer(job, queue, execution, time.time() + 5, "noop", reasons, ["shard:1"])
    assert not redis_conn.exists(job.key)
    assert job.id not in ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids()
    assert f"{job.id}|heavy" not in {m.decode() for m in redis_conn.zrange(parked_key("shard:1"), 0, -1)}
    assert misplaced(redis_conn, ["heavy"], []) == {}

    job, execution = claimed(ttl=100)
    redis_conn.hset(job.key, LAPSES_AT_FIELD, 1)
    assert moves.defer(job, queue, execution, time.time() + 5, "noop", reasons, restart_ttl=True)
    assert 98 <= redis_conn.ttl(job.key) <= 100 and not redis_conn.hexists(job.key, LAPSES_AT_FIELD)


@pytest.mark.unit
def test_script_arguments_are_named() -> None:
    named = {"composite": "c", "exec_id": "e", "job_id": "j", "due": 1, "meta": "m", "owner": "1:e"}
    named |= {"lapses_field": "easeoff_lapses_at", "restart_ttl": ""}
    assert DEFER.args(["f"], **named, parked_member="p")[-1] == "f"
    with pytest.raises(TypeError, match=r"defer.lua: missing \['parked_member'\], unexpected \['parked'\]"):
        DEFER.args(**named, parked="p")
