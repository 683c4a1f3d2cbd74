"""No ungated run by any path (issue 23, item 4): a job for an easeoff task pushed through plain rq
(`Queue.enqueue`, its scheduler's `enqueue_in`, `rq enqueue`) carries no easeoff meta; the worker
works it out from the job's arguments, as `enqueue` would, and gates the job on it. A job whose
meta cannot be worked out is refused with the reason and kept for `easeoff requeue`."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks.admission import admit, refusal
from easeoff.tasks.catalog import ledger_in_chunks, record_once
from easeoff.tasks.derived_meta import UngatableJob, adopt_meta, meta_for_job
from easeoff.tasks.meta import META_KEY, JobMeta
from tests.conftest import REPO, TEST_REDIS_URL, ConnectionHolder, WorkerProcesses, run_cli, wait_until
from tests.placement import misplaced
from tests.test_operators import RQ
from tests.test_worker_gate import ledger_count, strain_thresholds

RECORD_RUN = "easeoff.tasks.catalog.record_run"


def plain_queue(redis: Redis, name: str = "heavy") -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def stored_meta(redis: Redis, job_id: str) -> JobMeta:
    return JobMeta.of(Job.fetch(job_id, connection=redis, serializer=JSONSerializer))


def deferred_on_strain(redis: Redis, job_id: str) -> bool:
    """In rq's scheduled registry, deferred by the gate for db1's connections."""
    if job_id not in ScheduledJobRegistry("heavy", connection=redis).get_job_ids():
        return False
    meta = stored_meta(redis, job_id)
    return meta.deferrals >= 1 and any(r.startswith("connections:db1 ") for r in meta.last_reasons)


def assert_gated_then_run(
    redis: Redis, job_id: str, tag: str, connections: ConnectionHolder, workers: WorkerProcesses
) -> None:
    """Deferred on its strained shard with the meta its task works out, not run; run once when it clears."""
    wait_until(lambda: deferred_on_strain(redis, job_id), 20, what="the plain job deferred on shard 1's strain")
    meta = stored_meta(redis, job_id)
    assert (meta.task, meta.resources) == ("record_run", ("shard:1",)), meta
    assert ledger_count(1, tag) == 0, workers.logs()
    assert FinishedJobRegistry("heavy", connection=redis).count == 0
    connections.hold(0)
    wait_until(lambda: FinishedJobRegistry("heavy", connection=redis).count == 1, 30, what="the job run after strain")
    assert ledger_count(1, tag) == 1
    assert FailedJobRegistry("heavy", connection=redis).count == 0
    assert misplaced(redis, ["heavy"], [job_id]) == {}


# -- the derivation, on jobs rq made -------------------------------------------------------


def test_a_plain_jobs_meta_is_the_one_enqueue_gives(redis_conn: Redis) -> None:
    plain = plain_queue(redis_conn).enqueue("easeoff.tasks.catalog.record_once", 2, tag="x")
    by_easeoff = record_once.enqueue(2, tag="x", connection=redis_conn)
    assert META_KEY not in plain.meta
    derived = meta_for_job(plain, known_resources=["shard:1", "shard:2"])
    assert derived == JobMeta.of(by_easeoff)
    assert (derived.task, derived.resources, derived.idempotent) == ("record_once", ("shard:2",), True)


def test_a_derived_meta_is_kept_on_the_job_and_never_overwrites_a_stored_one(redis_conn: Redis) -> None:
    job = plain_queue(redis_conn, "recount").enqueue(
        "easeoff.tasks.catalog.rebuild_user_stats", shard=1, first_user=1, last_user=5, meta={"app": "kept"}
    )
    fetched = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    meta = adopt_meta(fetched)
    assert (meta.task, meta.resources, meta.resumable) == ("rebuild_user_stats", ("shard:1",), True)
    assert JobMeta.of(fetched) == meta  # in memory, for the work horse and the heartbeats
    again = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    assert JobMeta.of(again) == meta and again.meta["app"] == "kept"  # and in Redis

    # A stale copy of the job, fetched before: it must not write over what a newer owner stored.
    stale = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    stale.meta.pop(META_KEY)
    again.meta[META_KEY]["cursor"] = 42
    again.save_meta()
    adopt_meta(stale)
    assert stored_meta(redis_conn, job.id).cursor == 42


def test_a_plain_function_keeps_its_name_and_no_resources(redis_conn: Redis) -> None:
    job = plain_queue(redis_conn).enqueue("os.getcwd")
    assert adopt_meta(job) == JobMeta(task="getcwd")
    assert META_KEY not in Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).meta


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "known", "says"),
    [
        (RECORD_RUN, (), {"tag": "no shard"}, None, "task record_run: bad arguments: missing a required argument"),
        (RECORD_RUN, (1,), {"colour": "red"}, None, "got an unexpected keyword argument 'colour'"),
        (RECORD_RUN, (), {"shard": "one"}, None, "task record_run: cannot work out its resources"),
        (RECORD_RUN, (9,), {}, ["shard:1", "shard:2"], "resource 'shard:9' is not in the config"),
        (ledger_in_chunks.func_path, (1, 3), {"cursor": 2}, None, "cursor is kept by easeoff"),
    ],
)
def test_a_job_whose_meta_cannot_be_worked_out_is_refused_with_the_reason(
    redis_conn: Redis, func: str, args: tuple, kwargs: dict, known: list[str] | None, says: str
) -> None:
    job = plain_queue(redis_conn).enqueue(func, *args, **kwargs)
    with pytest.raises(UngatableJob) as refused:
        meta_for_job(job, known_resources=known)
    reason = refused.value.reason
    assert reason.startswith("enqueued without easeoff meta") and says in reason and "\n" not in reason, reason


def test_a_task_refuses_a_job_the_gate_did_not_judge_on_its_meta(redis_conn: Redis) -> None:
    """Admitted but without easeoff meta (its task's module is not among the config's, so the
    worker could not work its meta out): the task refuses rather than run on no resources."""
    job = plain_queue(redis_conn).enqueue(RECORD_RUN, shard=1)
    assert "taken by a worker that is not easeoff's" in (refusal(job, "record_run") or "")
    admit(job.id)
    try:
        assert "has no easeoff meta" in (refusal(job, "record_run") or "")
        adopt_meta(job)
        assert refusal(job, "record_run") is None
    finally:
        admit(None)


# -- the paths in, through a real worker ---------------------------------------------------


def test_a_plain_enqueue_on_a_strained_shard_is_deferred_then_runs(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    high, low, _ = strain_thresholds()
    config = write_config(high=high, low=low)
    connections.hold(40)  # shard 1 strained
    job = plain_queue(redis_conn).enqueue(RECORD_RUN, shard=1, tag="plain-enqueue")
    workers.start(config, "heavy")
    assert_gated_then_run(redis_conn, job.id, "plain-enqueue", connections, workers)


def test_a_job_rqs_scheduler_made_due_is_gated(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    """rq 3.0 keeps `enqueue_in` jobs in its scheduled registry; easeoff's workers promote due ones
    (`prober_duties.promote_due`, as rq's scheduler would) into the queue, where the claim gates them."""
    high, low, _ = strain_thresholds()
    config = write_config(high=high, low=low)
    connections.hold(40)
    job = plain_queue(redis_conn).enqueue_in(timedelta(seconds=1), RECORD_RUN, shard=1, tag="scheduled")
    assert job.id in ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids()
    workers.start(config, "heavy")
    assert_gated_then_run(redis_conn, job.id, "scheduled", connections, workers)


def test_rq_enqueue_from_the_command_line_is_gated(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    high, low, _ = strain_thresholds()
    config = write_config(high=high, low=low)
    connections.hold(40)
    command = [RQ, "enqueue", "-u", TEST_REDIS_URL, "-S", "json", "-q", "heavy", "--job-id", "by-rq-cli"]
    enqueued = subprocess.run(
        [*command, RECORD_RUN, "shard:=1", "tag=rq-cli"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert enqueued.returncode == 0, enqueued.stderr
    workers.start(config, "heavy")
    assert_gated_then_run(redis_conn, "by-rq-cli", "rq-cli", connections, workers)


def test_a_plain_job_that_does_not_bind_fails_with_the_reason_and_can_be_requeued(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config()  # healthy: only the job's arguments stand in its way
    job = plain_queue(redis_conn).enqueue(RECORD_RUN, tag="unbound")  # no shard
    plain_queue(redis_conn).enqueue(RECORD_RUN, shard=1, tag="bound")
    workers.start(config, "heavy")
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: failed.get_job_ids() == [job.id], 20, what="the unbindable job failed")
    wait_until(lambda: FinishedJobRegistry("heavy", connection=redis_conn).count == 1, 20, what="the good one run")
    assert ledger_count(1, "bound") == 1
    listing = run_cli("--config", str(config), "failed", "heavy")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(job.id))
    assert "without easeoff meta" in row and "missing a required argument: 'shard'" in row, row

    workers.stop_all()  # so the requeued job stays where requeue put it
    requeued = run_cli("--config", str(config), "requeue", job.id)
    assert requeued.returncode == 0 and requeued.stdout.strip() == "requeued 1 of 1 jobs", requeued
    assert redis_conn.lrange("rq:queue:heavy", 0, -1) == [job.id.encode()] and failed.count == 0


def test_a_plain_resumable_job_keeps_its_worked_out_meta_through_its_checkpoints(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    """A resumable task reads its meta back from Redis at the start and stores it at each
    checkpoint: the meta worked out at the claim must be there, not an empty one."""
    job = plain_queue(redis_conn).enqueue(ledger_in_chunks.func_path, shard=1, chunks=3)
    proc = workers.start(write_config(), "heavy", burst=True)
    assert proc.wait(timeout=60) == 0, workers.logs()
    assert FinishedJobRegistry("heavy", connection=redis_conn).get_job_ids() == [job.id], workers.logs()
    meta = stored_meta(redis_conn, job.id)
    assert (meta.task, meta.resources, meta.resumable) == ("ledger_in_chunks", ("shard:1",), True), meta
    assert (meta.cursor, meta.chunks) == (3, 3), meta
