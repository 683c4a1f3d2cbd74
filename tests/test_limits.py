"""Concurrency limits: AIMD as a property, leases and slot waits on real Redis, and a fleet that adapts."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import ConcurrencyConfig, load_config
from easeoff.feedback.levers.limits import Leases, LeaseScope, aimd_step, current_limits, lease_ttl, slot_park_scope
from easeoff.tasks.catalog import record_run
from easeoff.workers.moves import JobMoves
from tests.conftest import ConnectionHolder, WorkerProcesses, wait_until
from tests.test_worker_gate import strain_thresholds

LIMITED = """
[resources."shard:9"]
hosts = ["db1"]
[resources."shard:9".concurrency]
min = 1
max = 4
"""


def enqueue_on(redis: Redis, resource: str, **kwargs: object) -> Job:
    """A record_run job (it writes to shard 1's database) re-labelled to touch `resource`,
    a limited resource that lives on the same host, db1."""
    job = record_run.enqueue(shard=1, connection=redis, **kwargs)
    job.meta["easeoff"]["resources"] = [resource]
    job.save_meta()
    return job


@pytest.mark.unit
@given(
    limit=st.integers(min_value=1, max_value=64),
    low=st.integers(min_value=1, max_value=8),
    span=st.integers(min_value=0, max_value=56),
    strained=st.booleans(),
    saturated=st.booleans(),
)
def test_aimd_stays_in_bounds_and_moves_the_right_way(
    limit: int, low: int, span: int, strained: bool, saturated: bool
) -> None:
    cfg = ConcurrencyConfig(min=low, max=low + span)
    new = aimd_step(limit, strained, saturated, cfg)
    assert cfg.min <= new <= cfg.max
    clamped = max(cfg.min, min(cfg.max, limit))
    if strained:
        assert new <= clamped
    elif saturated:
        assert clamped <= new <= clamped + 1
    else:
        assert new == clamped


def test_leases_refuse_when_full_keep_a_slot_for_normal_priority_and_lapse(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config(interval=0.5))
    leases = Leases(redis_conn, config)
    two = [LeaseScope("shard:1", 2)]
    assert leases.acquire(two, "a") is None
    refusal = leases.acquire(two, "b", reserve=1)  # low priority: the last slot stays free
    assert refusal is not None and str(refusal.reason).startswith("yield:shard:1 1/2")
    assert leases.acquire(two, "b") is None
    refusal = leases.acquire(two, "c")
    assert refusal is not None and str(refusal.reason) == "concurrency:shard:1 2/2 in use"

    # Taking slots is all or nothing across scopes.
    both = [LeaseScope("task:t", 5), LeaseScope("shard:1", 2)]
    assert leases.acquire(both, "d") is not None
    assert redis_conn.zcard("easeoff:leases:task:t") == 0

    # A holder that stops renewing loses its slot once the lease TTL passes.
    with redis_conn.pipeline() as pipe:
        Leases.release(two, "a", pipe)
        pipe.execute()
    assert leases.acquire(two, "c") is None
    expiry = redis_conn.zscore("easeoff:leases:shard:1", "b")
    assert expiry is not None and expiry <= time.time() + lease_ttl(config) + 0.1


def test_killed_worker_frees_its_lease_within_the_ttl_and_a_waiting_job_gets_the_slot(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    # One slot, fixed: the holder saturates it, and a healthy prober would otherwise raise the limit.
    one_slot = LIMITED.replace('"shard:9"', '"shard:3"').replace("max = 4", "max = 1")
    config_path = write_config(interval=0.5, extra=one_slot)
    config = load_config(config_path)
    leases_key = "easeoff:leases:shard:3"
    enqueue_on(redis_conn, "shard:3", tag="holder", seconds=30)
    waiter = enqueue_on(redis_conn, "shard:3", tag="waiter")
    victim = workers.start(config_path, "heavy")
    wait_until(lambda: redis_conn.zcard(leases_key) == 1, 15, what="the first job to hold the slot")
    dead_lease = redis_conn.zrange(leases_key, 0, -1)[0]
    workers.start(config_path, "heavy")
    wait_until(lambda: redis_conn.zcard("easeoff:parked:slot:shard:3") == 1, 15, what="the second job to wait")

    killed_at = time.monotonic()
    # The machine, not the worker alone: a horse whose worker died runs its job on and beats for
    # it, so its slot stays taken until the job ends (a limit is never exceeded).
    workers.kill_machine(victim)

    def dead_lease_lapsed() -> bool:
        expiry = redis_conn.zscore(leases_key, dead_lease)
        return expiry is None or expiry < time.time()

    wait_until(dead_lease_lapsed, lease_ttl(config) + 2, what="the dead worker's lease to lapse")
    assert time.monotonic() - killed_at <= lease_ttl(config) + 1.5
    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: waiter.id in finished.get_job_ids(), 10, what="the waiting job to be handed the freed slot")
    assert time.monotonic() - killed_at < lease_ttl(config) + 10  # the lapse and a probe, not the 5-min recheck


def test_adaptive_limit_falls_under_strain_and_recovers(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    high, low, _ = strain_thresholds()
    config_path = write_config(
        interval=0.3, high=high, low=low, backoff_base=0.3, backoff_cap=0.6, extra=LIMITED.replace("shard:9", "shard:4")
    )
    config = load_config(config_path)

    def enqueue(n: int) -> None:
        for _ in range(n):
            enqueue_on(redis_conn, "shard:4", tag="aimd", seconds=0.4)

    enqueue(60)
    for _ in range(4):
        workers.start(config_path, "heavy")
    wait_until(lambda: current_limits(redis_conn, config)["shard:4"][0] >= 3, 30, what="the limit to grow")

    connections.hold(40)
    wait_until(lambda: current_limits(redis_conn, config)["shard:4"][0] == 1, 15, what="the limit to fall")

    connections.hold(0)
    enqueue(40)
    wait_until(lambda: current_limits(redis_conn, config)["shard:4"][0] >= 2, 30, what="the limit to recover")


def test_a_finished_job_hands_its_slot_straight_back(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config_path = write_config(interval=0.5, extra=LIMITED.replace("shard:9", "shard:5"))
    for _ in range(6):
        enqueue_on(redis_conn, "shard:5", tag="slot")
    started = time.monotonic()
    proc = workers.start(config_path, "heavy", burst=True)
    assert proc.wait(timeout=60) == 0, workers.logs()
    # One slot, six jobs: each must release its lease as it ends, not wait for the TTL to lapse.
    assert time.monotonic() - started < 6 * lease_ttl(load_config(config_path)) / 2
    assert redis_conn.zcard("easeoff:leases:shard:5") == 0


def _wait_for_slot(moves: JobMoves, leases: Leases, scope: LeaseScope, queue: Queue, reserve: int = 0) -> str:
    """Enqueue, claim and be refused a slot: the job is parked waiting for one, as a worker does it."""
    job = record_run.enqueue(shard=1, tag="wait", connection=moves.connection)
    claim = moves.claim([queue], "w", ttl=60)
    assert claim is not None and claim.job_id == job.id
    refusal = leases.acquire([scope], claim.execution.composite_key, reserve)
    assert refusal is not None
    park = slot_park_scope(refusal.reason)
    assert park is not None
    assert moves.defer(job, queue, claim.execution, time.time() + 60, "record_run", [refusal.reason], [park])
    return job.id


def test_free_slots_go_to_waiting_jobs_normal_priority_first(redis_conn: Redis, write_config) -> None:
    leases, moves = Leases(redis_conn, load_config(write_config(interval=0.5))), JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    scope = LeaseScope("shard:1", 2)
    assert leases.acquire([scope], "holder-a") is None
    assert leases.acquire([scope], "holder-b") is None
    low = _wait_for_slot(moves, leases, scope, queue, reserve=1)
    normal = [_wait_for_slot(moves, leases, scope, queue) for _ in range(2)]
    assert redis_conn.llen(queue.key) == 0
    assert moves.release_slots() == 0  # no slot free: everyone keeps waiting, nobody is retried

    with redis_conn.pipeline() as pipe:  # one holder ends: its slot goes to the longest-waiting normal job
        Leases.release([scope], "holder-a", pipe)
        moves.release_slots(["shard:1"], pipeline=pipe)
        pipe.execute()
    assert redis_conn.lrange(queue.key, 0, -1) == [normal[0].encode()]
    assert Job.fetch(normal[0], connection=redis_conn, serializer=JSONSerializer).get_status() == JobStatus.QUEUED

    # Both slots free: the other normal job gets one; the low-priority job may not take the last.
    redis_conn.delete(queue.key)
    with redis_conn.pipeline() as pipe:
        Leases.release([scope], "holder-b", pipe)
        pipe.execute()
    assert moves.release_slots() == 1
    assert redis_conn.lrange(queue.key, 0, -1) == [normal[1].encode()]
    assert redis_conn.zcard("easeoff:parked:slot-low:shard:1") == 1

    redis_conn.zadd(scope.leases_key, {"holder-c": time.time() + 60})  # a raised limit frees a slot too
    redis_conn.set(scope.limit_key, 3)
    redis_conn.delete(queue.key)
    assert moves.release_slots() == 1
    assert redis_conn.lrange(queue.key, 0, -1) == [low.encode()]
    assert moves.release_slots() == 0  # nobody waits any more


def test_jobs_waiting_for_a_slot_do_not_churn_and_get_it_promptly(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config_path = write_config(interval=0.5, extra=LIMITED.replace("shard:9", "shard:6"))
    jobs = [enqueue_on(redis_conn, "shard:6", tag="queue-for-slot", seconds=0.5) for _ in range(8)]
    redis_conn.set("easeoff:limit:shard:6", 1)  # pinned at one slot: AIMD only grows it when healthy and saturated
    started = time.monotonic()
    for _ in range(4):
        workers.start(config_path, "heavy")
    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: finished.count == 8, 40, what="all jobs to run, one slot between four workers")
    elapsed = time.monotonic() - started
    # Each job waited parked for a slot and was handed one as the previous job ended: a couple
    # of refusals per job at most (not one per worker per interval), and no safety-net rechecks.
    deferrals = [
        Job.fetch(j.id, connection=redis_conn, serializer=JSONSerializer).meta["easeoff"]["deferrals"] for j in jobs
    ]
    assert sum(deferrals) <= 2 * len(jobs), deferrals
    assert elapsed < 30, elapsed
    assert redis_conn.zcard("easeoff:parked:slot:shard:6") == 0
