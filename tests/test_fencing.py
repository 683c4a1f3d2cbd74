"""Fenced executions: each job runs once, in one place, whoever stalls.

The moves on real Redis first (a claim sent twice, an id queued twice, a swept owner's beat,
defer and end refused, a lapsed lease given back to its live owner, no sweep right after a
silence of Redis), then the faults that broke the promise, on real processes: Redis SIGSTOPped
for 15 s under two running jobs, a worker SIGSTOPped while its horse runs on, a worker whose
clock is 15 s behind, rq's socket timeout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from redis import Redis
from redis.exceptions import WatchError
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback import keys
from easeoff.feedback.config import load_config
from easeoff.feedback.connect import SOCKET_TIMEOUT, connect
from easeoff.feedback.levers.limits import Leases, LeaseScope
from easeoff.feedback.reasons import Kind, Reason
from easeoff.tasks.catalog import noop, record_once, record_run
from easeoff.tasks.meta import META_KEY
from easeoff.workers.fencing import FencedOut, arm
from easeoff.workers.gated_worker import GatedWorker
from easeoff.workers.moves import JobMoves
from tests.conftest import MYSQL, WorkerProcesses, children, stays_true, wait_until
from tests.placement import misplaced
from tests.test_fleet_clock import skewed
from tests.test_outages import PrivateRedis


def long_up(redis: Redis) -> None:
    """Redis has been up all along: absence may be judged now (no silence just ended)."""
    redis.delete(keys.SWEEP_AFTER)


def test_a_claim_sent_twice_pops_one_job_and_answers_the_same(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    first, second = noop.enqueue(connection=redis_conn), noop.enqueue(connection=redis_conn)
    claim = moves.claim([queue], "w1", ttl=60, execution_id="e1")
    again = moves.claim([queue], "w1", ttl=60, execution_id="e1")  # the reply was lost: sent again
    assert claim is not None and again is not None
    assert (again.job_id, again.token) == (claim.job_id, claim.token) == (first.id, claim.token)
    assert redis_conn.lrange(queue.key, 0, -1) == [second.id.encode()]
    assert StartedJobRegistry("heavy", connection=redis_conn).count == 1


def test_an_id_queued_twice_does_not_run_twice_at_once(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    job = noop.enqueue(connection=redis_conn)
    redis_conn.rpush(queue.key, job.id)  # the same id a second time
    other = noop.enqueue(connection=redis_conn)
    first = moves.claim([queue], "w1", ttl=60)
    second = moves.claim([queue], "w2", ttl=60)
    assert first is not None and first.job_id == job.id
    assert second is not None and second.job_id == other.id  # the duplicate was dropped, not run
    assert second.token > first.token


def test_a_swept_owner_can_neither_beat_nor_defer_nor_end_its_job(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    job = queue.enqueue_call("easeoff.tasks.catalog.noop", meta={META_KEY: {"task": "noop", "idempotent": True}})
    claim = moves.claim([queue], "w1", ttl=1)
    assert claim is not None
    assert moves.heartbeat(claim.fence, "heavy", ttl=1)
    long_up(redis_conn)
    assert moves.recover_abandoned([queue], now=time.time() + 120) == 1  # swept: requeued
    retaken = moves.claim([queue], "w2", ttl=60)
    assert retaken is not None and retaken.job_id == job.id and retaken.token > claim.token

    assert not moves.heartbeat(claim.fence, "heavy", ttl=60)
    fetched = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    strain = [Reason(Kind.SIGNAL, "db1", name="connections")]
    assert not moves.defer(fetched, queue, claim.execution, time.time() + 5, "noop", strain,
                           fence=claim.fence)  # fmt: skip
    with redis_conn.pipeline() as pipe, pytest.raises(FencedOut):
        arm(pipe, claim.fence)
        pipe.zadd(FinishedJobRegistry("heavy", connection=redis_conn).key, {job.id: 1})
        pipe.execute()
    assert FinishedJobRegistry("heavy", connection=redis_conn).count == 0
    # The new owner's own moves still go through.
    assert moves.heartbeat(retaken.fence, "heavy", ttl=60)
    with redis_conn.pipeline() as pipe:
        arm(pipe, retaken.fence)
        pipe.set("easeoff:test-marker", 1)
        pipe.execute()
    assert redis_conn.get("easeoff:test-marker") == b"1"


def test_a_fenced_transaction_fails_if_the_job_is_swept_between_its_check_and_its_exec(redis_conn: Redis) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    noop.enqueue(connection=redis_conn)
    claim = moves.claim([queue], "w1", ttl=60)
    assert claim is not None
    with redis_conn.pipeline() as pipe, pytest.raises(WatchError):
        arm(pipe, claim.fence)
        pipe.watch("easeoff:unrelated")  # as rq's success handler watches the dependents key
        redis_conn.delete(claim.fence.key)  # the sweep, between the check and the EXEC
        pipe.multi()
        pipe.set("easeoff:test-marker", 1)
        pipe.execute()
    assert redis_conn.get("easeoff:test-marker") is None


def test_a_lease_lost_in_a_blip_is_given_back_to_its_live_owner(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config())
    moves, leases = JobMoves(redis_conn), Leases(redis_conn, config)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    noop.enqueue(connection=redis_conn)
    claim = moves.claim([queue], "w1", ttl=60)
    assert claim is not None
    scope = LeaseScope("shard:1", 1)
    member = claim.execution.composite_key
    assert leases.acquire([scope], member) is None
    redis_conn.zrem(scope.leases_key, member)  # lapsed and purged while the owner could not beat
    assert moves.heartbeat(claim.fence, "heavy", 60, [scope.leases_key], member)
    assert redis_conn.zscore(scope.leases_key, member) is not None
    assert leases.acquire([scope], "someone-else") is not None  # the slot is the live job's again


def test_nothing_is_swept_or_purged_within_a_grace_of_a_silence_of_redis(redis_conn: Redis, write_config) -> None:
    moves = JobMoves(redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    queue.enqueue_call("easeoff.tasks.catalog.noop", meta={META_KEY: {"task": "noop", "idempotent": True}})
    assert moves.claim([queue], "w1", ttl=1) is not None
    long_up(redis_conn)
    seconds, _ = redis_conn.time()
    redis_conn.set(keys.FLEET_SEEN, seconds - 30)  # nothing reached Redis for 30 s: it was stalled
    assert moves.recover_abandoned([queue], now=time.time() + 120) == 0
    assert float(redis_conn.get(keys.SWEEP_AFTER) or 0) >= seconds + 9
    scope = LeaseScope("shard:1", 1)
    redis_conn.zadd(scope.leases_key, {"lapsed-owner": seconds - 20})
    assert Leases(redis_conn, load_config(write_config())).acquire([scope], "newcomer") is not None
    long_up(redis_conn)
    assert moves.recover_abandoned([queue], now=time.time() + 120) == 1


def test_requeue_refuses_a_job_that_finished(redis_conn: Redis) -> None:
    job = noop.enqueue(connection=redis_conn)
    redis_conn.delete(Queue("heavy", connection=redis_conn).key)  # it ran...
    FinishedJobRegistry("heavy", connection=redis_conn).add(job, -1)  # ...and finished, and a stale owner failed it
    FailedJobRegistry("heavy", connection=redis_conn).add(job, -1)
    assert not JobMoves(redis_conn).requeue_failed(job.id, "heavy")
    assert redis_conn.llen(Queue("heavy", connection=redis_conn).key) == 0


def test_the_worker_keeps_easeoffs_socket_timeout_whatever_rq_sets(write_config) -> None:
    config = load_config(write_config())
    client = connect(config)
    GatedWorker(["heavy"], connection=client, config=config)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == SOCKET_TIMEOUT


# -- the faults, on real processes ---------------------------------------------------------


def ledger_rows(shard: int, job_id: str) -> int:
    """How many times the job ran to its end: `record_run` writes a `job_runs` row per run,
    `record_once` counts its runs in its one `job_ledger` row."""
    conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM job_runs WHERE job_id = %s", (job_id,))
            (rows,) = cur.fetchone()
            cur.execute("SELECT COALESCE(SUM(runs), 0) FROM job_ledger WHERE job_id = %s", (job_id,))
            (runs,) = cur.fetchone()
            return int(rows) + int(runs)
    finally:
        conn.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def frozen(port: int) -> bool:
    try:
        Redis(port=port, socket_connect_timeout=0.3, socket_timeout=0.3).ping()
    except OSError:
        return True
    except Exception:
        return True
    return False


def finished_all(workers: WorkerProcesses, redis: Redis, jobs: list[Job], timeout: float) -> None:
    """Wait for every job to finish; on a timeout, the workers' logs go with the failure."""
    finished = FinishedJobRegistry("heavy", connection=redis)
    try:
        wait_until(lambda: {j.id for j in jobs} <= set(finished.get_job_ids()), timeout, what="the jobs to finish")
    except BaseException:
        print(workers.logs())
        raise


def started(redis: Redis, *jobs: Job) -> bool:
    ids = set(StartedJobRegistry("heavy", connection=redis).get_job_ids())
    return all(j.id in ids for j in jobs)


@pytest.mark.slow
def test_a_redis_stall_of_15_s_runs_no_job_twice_and_places_each_once(
    private_redis: PrivateRedis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(redis_url=private_redis.url, interval=0.5)
    redis = Redis.from_url(private_redis.url)
    once = record_once.enqueue(shard=1, tag="stall", seconds=25, connection=redis)
    plain = record_run.enqueue(shard=1, tag="stall", seconds=25, connection=redis)
    workers.start(config, "heavy")
    workers.start(config, "heavy")
    wait_until(lambda: started(redis, once, plain), 30, what="both jobs to run")
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        stays_true(lambda: frozen(private_redis.port), 15, interval=0.5, what="Redis stalled")
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    finished_all(workers, redis, [once, plain], 60)
    assert ledger_rows(1, once.id) == 1, workers.logs()
    assert ledger_rows(1, plain.id) == 1, workers.logs()
    assert FailedJobRegistry("heavy", connection=redis).count == 0, workers.logs()
    assert misplaced(redis, ["heavy"], [once.id, plain.id]) == {}
    assert "abandoned" not in workers.logs()


@pytest.mark.slow
def test_a_stalled_worker_keeps_its_job_while_its_horse_runs_on(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=0.5)
    job = record_run.enqueue(shard=1, tag="parent-stall", seconds=20, connection=redis_conn)
    owner = workers.start(config, "heavy")
    wait_until(lambda: started(redis_conn, job) and children(owner.pid), 30, what="the job's horse")
    workers.start(config, "heavy")  # a live prober, sweeping every few seconds
    os.kill(owner.pid, signal.SIGSTOP)
    try:
        stays_true(lambda: started(redis_conn, job), 15, what="the job still started, not swept")
    finally:
        os.kill(owner.pid, signal.SIGCONT)
    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in finished.get_job_ids(), 30, what="the job to finish")
    assert ledger_rows(1, job.id) == 1
    assert FailedJobRegistry("heavy", connection=redis_conn).count == 0
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


@pytest.mark.slow
def test_a_worker_15_s_behind_keeps_its_running_job(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=0.5)
    job = record_run.enqueue(shard=1, tag="behind", seconds=20, connection=redis_conn)
    workers.start(config, "heavy", launcher=skewed("-15s"))
    wait_until(lambda: started(redis_conn, job), 30, what="the job to run on the skewed worker")
    workers.start(config, "heavy")  # on the true clock, sweeping
    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in finished.get_job_ids(), 45, what="the job to finish")
    assert ledger_rows(1, job.id) == 1
    assert FailedJobRegistry("heavy", connection=redis_conn).count == 0, workers.logs()


def test_a_worker_whose_job_was_taken_stops_it_and_records_no_end(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=0.5)
    job = record_run.enqueue(shard=1, tag="taken", seconds=20, connection=redis_conn)
    owner = workers.start(config, "heavy")
    wait_until(lambda: started(redis_conn, job) and children(owner.pid), 30, what="the job's horse")
    horse = children(owner.pid)[0]
    redis_conn.delete(keys.owner_key(job.id))  # as the sweep does when it takes a job
    wait_until(lambda: not os.path.exists(f"/proc/{horse}"), 10, what="the fenced-out horse to be stopped")
    assert "its end not recorded" in workers.logs() or "its horse stops" in workers.logs()
    stays_true(lambda: FinishedJobRegistry("heavy", connection=redis_conn).count == 0, 2, what="no finish")
    assert FailedJobRegistry("heavy", connection=redis_conn).count == 0
    assert ledger_rows(1, job.id) == 0


def test_an_in_process_worker_whose_job_was_taken_interrupts_it_and_records_no_end(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=0.5)
    job = record_run.enqueue(shard=1, tag="taken", seconds=20, connection=redis_conn)
    workers.start(config, "heavy", in_process=True)
    wait_until(lambda: started(redis_conn, job), 30, what="the job to run")
    redis_conn.delete(keys.owner_key(job.id))  # as the sweep does when it takes a job
    wait_until(lambda: "its end not recorded" in workers.logs(), 10, what="the worker to stop the job")
    # Interrupted, not left to sleep out its 20 s: the one worker runs the next job at once.
    following = noop.enqueue(connection=redis_conn)
    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: following.id in finished.get_job_ids(), 10, what="the next job, the taken one stopped")
    assert job.id not in finished.get_job_ids()
    assert FailedJobRegistry("heavy", connection=redis_conn).count == 0
    assert ledger_rows(1, job.id) == 0


def test_a_worker_rides_out_a_redis_that_refuses_writes(
    private_redis: PrivateRedis, shards, write_config, workers: WorkerProcesses
) -> None:
    """OOM (and READONLY after a failover) used to reach rq's catch-all: the worker quit, its
    horse ran on unwatched. Now it is waited out like an unreachable Redis."""
    config = write_config(redis_url=private_redis.url, interval=0.5)
    redis = Redis.from_url(private_redis.url)
    job = record_run.enqueue(shard=1, tag="oom", seconds=4, connection=redis)
    worker = workers.start(config, "heavy")
    wait_until(lambda: started(redis, job), 30, what="the job to run")
    redis.config_set("maxmemory", 1)  # every write refused: OOM
    try:
        stays_true(lambda: worker.poll() is None, 6, what="the worker alive through the OOM")
    finally:
        redis.config_set("maxmemory", 0)
    after = record_run.enqueue(shard=1, tag="oom-after", connection=redis)
    finished_all(workers, redis, [job, after], 40)
    assert worker.poll() is None
    assert ledger_rows(1, job.id) == 1


def test_a_claimed_job_whose_read_meets_a_redis_restart_is_not_failed(
    private_redis: PrivateRedis, write_config
) -> None:
    """The payload read right after the claim used to fail a good job ("cannot load job
    payload (ConnectionError)") when Redis went away for a moment; now the worker waits."""
    config = load_config(write_config(redis_url=private_redis.url))
    client = connect(config)
    worker = GatedWorker(["heavy"], connection=client, config=config)
    queue = Queue("heavy", connection=client, serializer=JSONSerializer)
    job = noop.enqueue(connection=client)
    claim = worker.moves.claim([queue], worker.name, 60)
    assert claim is not None and claim.job_id == job.id
    private_redis.stop()  # AOF on: the claim survives the restart
    restart = threading.Timer(1.0, private_redis.start)
    restart.start()
    try:
        loaded = worker._load_claimed(claim, queue)
    finally:
        restart.join()
    assert loaded is not None and loaded[0].id == job.id
    assert FailedJobRegistry("heavy", connection=client).count == 0
    assert job.id in StartedJobRegistry("heavy", connection=client).get_job_ids()


def test_an_admitted_job_keeps_the_worker_busy_until_it_runs(redis_conn: Redis, write_config) -> None:
    """A SIGTERM between the admission and the run used to find the worker idle (rq's handler
    then raises StopRequested) and strand the claimed job in `started`."""
    worker = GatedWorker(["heavy"], connection=redis_conn, config=load_config(write_config()))
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    noop.enqueue(connection=redis_conn)
    worker._stop_requested = True  # the SIGTERM came while the claim was in flight
    with worker._uninterruptible():
        worker._claimed = worker.moves.claim([queue], worker.name, 60)
    assert worker.get_state() == "busy"  # rq's handler now waits for the job instead of raising


def test_a_job_taken_between_its_claim_and_its_start_does_not_run(redis_conn: Redis, shards, write_config) -> None:
    """The worker stalls between its claim and the fork long enough for the job to be swept and
    claimed again (here: its owner key names another execution). The horse's first beat finds
    the claim no longer this execution's: the task never runs, and nothing of it is recorded."""
    from tests.test_db_outages import ledger_rows

    job = record_run.enqueue(shard=1, tag="taken", connection=redis_conn)
    worker = GatedWorker(["heavy"], connection=redis_conn, config=load_config(write_config()))
    claimed = worker.dequeue_job_and_maintain_ttl(None)
    assert claimed is not None and claimed[0].id == job.id
    redis_conn.set(keys.owner_key(job.id), "999999:another-execution")
    worker.execute_job(*claimed)
    assert ledger_rows(job.id) == 0
    assert job.id not in FinishedJobRegistry("heavy", connection=redis_conn).get_job_ids()
    assert job.id not in FailedJobRegistry("heavy", connection=redis_conn).get_job_ids()
    assert redis_conn.get(keys.owner_key(job.id)) == b"999999:another-execution"
