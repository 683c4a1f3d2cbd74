"""Transactional checkpoints (tasks/transactional.py): a chunk's cursor commits with its writes,
so a worker SIGKILLed between a chunk's MySQL commit and its Redis checkpoint resumes after that
chunk, and every chunk's row is in MariaDB exactly once, in order (checked row by row)."""

from __future__ import annotations

import json
from typing import Any

import pymysql
import pytest
from redis import Redis
from rq import get_current_job
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks.admission import admit
from easeoff.tasks.catalog import ledger_in_chunks
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.resumable import AlreadyFinished
from easeoff.tasks.shards import connect
from easeoff.tasks.transactional import (
    PRUNE_ANY_AFTER_DAYS,
    PRUNE_DONE_AFTER_DAYS,
    TABLE,
    ChunkConflict,
    commit_chunk,
    finish_chunks,
    resume_from,
)
from tests.conftest import MYSQL, WorkerProcesses, children, wait_until
from tests.test_abandoned import RECOVERY_BOUND


def query(sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(**MYSQL, database="easeoff_shard1", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def tags(job_id: str) -> list[str]:
    """The job's ledger rows in the order they were committed."""
    return [row[0] for row in query("SELECT tag FROM job_runs WHERE job_id = %s ORDER BY id", (job_id,))]


def checkpoint_row(job_id: str) -> tuple[Any, int, bool] | None:
    """(cursor, chunks, done) that MySQL holds for the job."""
    rows = query(f"SELECT cursor_json, chunks, done FROM {TABLE} WHERE job_id = %s", (job_id,))
    return (json.loads(rows[0][0]), int(rows[0][1]), bool(rows[0][2])) if rows else None


def redis_cursor(redis: Redis, job_id: str) -> Any:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta["easeoff"].get("cursor")


def test_a_kill_between_the_mysql_commit_and_the_redis_checkpoint_resumes_after_that_chunk(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    stall, total = 5, 8
    config = write_config(interval=0.3)
    job = ledger_in_chunks.enqueue(shard=1, chunks=total, pause=0.2, stall_after_chunk=stall, connection=redis_conn)
    victim = workers.start(config, "heavy")
    # Chunk 5 is committed and its work horse sleeps before yielding it: MySQL has it, Redis cannot.
    wait_until(lambda: tags(job.id) == [f"chunk:{k}" for k in range(1, stall + 1)], 30, what="chunk 5 committed")
    assert checkpoint_row(job.id) == (stall, stall, False)
    in_redis = redis_cursor(redis_conn, job.id)
    assert in_redis is None or in_redis < stall, f"Redis already had cursor {in_redis}: the kill proves nothing"

    assert children(victim.pid), "the work horse"
    workers.kill_machine(victim)

    workers.start(config, "heavy")  # recovers the abandoned job, requeued (resumable), and runs it
    finished = FinishedJobRegistry("heavy", connection=redis_conn)

    def settled() -> bool:
        seen = tags(job.id)
        return job.id in finished.get_job_ids() or len(seen) != len(set(seen))

    wait_until(settled, RECOVERY_BOUND + 15, what="the job resumed and finished (or a chunk applied twice)")
    assert tags(job.id) == [f"chunk:{k}" for k in range(1, total + 1)], workers.logs()
    assert checkpoint_row(job.id) == (total, total, True)
    assert redis_cursor(redis_conn, job.id) == total


# -- the API against MariaDB, without a worker: rq's Job.perform makes the job current -----------


def run_chunks(upto: int, cursor: Any = None, finish: bool = False) -> Any:
    """One run of a job on shard 1: resume, commit chunks `chunk:K` up to `upto`, maybe finish.
    Returns the cursor it resumed from."""
    conn = connect(1)
    try:
        resumed = resume_from(conn, cursor)
        with conn.cursor() as cur:
            for chunk in range((resumed or 0) + 1, upto + 1):
                cur.execute(
                    "INSERT INTO job_runs (job_id, task, tag, ran_at) VALUES (%s, 'run_chunks', %s, NOW(6))",
                    (_job_id(), f"chunk:{chunk}"),
                )
                commit_chunk(conn, chunk)
        if finish:
            finish_chunks(conn)
        return resumed
    finally:
        conn.close()


def race() -> str:
    """Two runs of one job on two connections, both resumed at the same chunk and both writing the
    next: the first to commit wins, the other must roll its copy back."""
    first, second = connect(1), connect(1)
    try:
        at = resume_from(first, None) or 0
        assert (resume_from(second, None) or 0) == at
        for conn in (first, second):
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO job_runs (job_id, task, tag, ran_at) VALUES (%s, 'race', %s, NOW(6))",
                    (_job_id(), f"chunk:{at + 1}"),
                )
        commit_chunk(first, at + 1)
        try:
            commit_chunk(second, at + 1)
        except ChunkConflict as exc:
            return exc.reason
        return "no conflict"
    finally:
        first.close()
        second.close()


def skip_resume() -> None:
    conn = connect(1)
    try:
        commit_chunk(conn, 1)
    finally:
        conn.close()


def _job_id() -> str:
    job = get_current_job()
    return job.id if job is not None else "inline"


def new_job(redis: Redis, func: Any, job_id: str | None = None) -> Job:
    return Job.create(func, connection=redis, serializer=JSONSerializer, id=job_id)


def perform(job: Job, **kwargs: Any) -> Any:
    """Run the job once more, in this process, with these arguments: as a worker would."""
    job.kwargs = kwargs
    return job.perform()


def test_mysql_s_cursor_wins_over_a_stale_one_and_no_chunk_is_applied_twice(redis_conn: Redis, shards) -> None:
    job = new_job(redis_conn, run_chunks)
    assert perform(job, upto=3) is None  # the first run: nothing committed yet
    assert checkpoint_row(job.id) == (3, 3, False)
    assert perform(job, upto=5, cursor=1) == 3  # Redis said 1 (behind): MySQL's 3 wins
    assert perform(job, upto=5, cursor=5) == 5  # nothing left
    assert tags(job.id) == [f"chunk:{k}" for k in range(1, 6)]
    assert checkpoint_row(job.id) == (5, 5, False)


def test_a_finished_job_run_again_does_nothing_and_a_new_job_under_its_id_starts_afresh(
    redis_conn: Redis, shards
) -> None:
    job = new_job(redis_conn, run_chunks)
    perform(job, upto=2, finish=True)
    assert checkpoint_row(job.id) == (2, 2, True)
    with pytest.raises(AlreadyFinished) as finished:  # the resumable runner ends the job with its cursor
        perform(job, upto=4)
    assert (finished.value.cursor, finished.value.chunks) == (2, 2)

    again = new_job(redis_conn, run_chunks, job_id=job.id)  # an app re-enqueuing under the same id
    assert perform(again, upto=1) is None
    assert checkpoint_row(job.id) == (1, 1, False)
    assert tags(job.id) == ["chunk:1", "chunk:2", "chunk:1"]


def test_the_resumable_runner_ends_a_finished_job_run_again_with_its_final_cursor(redis_conn: Redis, shards) -> None:
    job_id = ledger_in_chunks.enqueue(shard=1, chunks=3, connection=redis_conn).id
    admit(job_id)  # what the gated worker does before its work horse runs the job
    try:
        job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
        assert job.perform() == 3
        meta = JobMeta.of(job)
        meta.cursor, meta.chunks = None, 0  # Redis lost the job's progress: only MySQL has it
        meta.store(job)
        job.save_meta()
        rerun = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)  # rq runs it again
        assert rerun.perform() == 3
    finally:
        admit(None)
    assert tags(job_id) == ["chunk:1", "chunk:2", "chunk:3"]
    assert (redis_cursor(redis_conn, job_id), JobMeta.of(rerun).chunks) == (3, 3)


def test_of_two_runs_of_one_job_only_one_commits_a_chunk(redis_conn: Redis, shards) -> None:
    job = new_job(redis_conn, race)
    assert "committed past chunk 0" in perform(job)  # both would insert the job's first checkpoint
    assert "committed past chunk 1" in perform(job)  # both would move it on from chunk 1
    assert tags(job.id) == ["chunk:1", "chunk:2"]  # the second run's copies were rolled back
    assert checkpoint_row(job.id) == (2, 2, False)


def test_outside_a_worker_it_only_commits_and_a_job_must_resume_first(redis_conn: Redis, shards) -> None:
    assert run_chunks(upto=2) is None
    assert tags("inline") == ["chunk:1", "chunk:2"]
    assert query(f"SELECT COUNT(*) FROM {TABLE}") == [(0,)]
    with pytest.raises(RuntimeError, match="call resume_from"):
        perform(new_job(redis_conn, skip_resume))


def test_the_table_is_created_on_first_use_in_an_app_s_database(redis_conn: Redis, shards) -> None:
    query(f"DROP TABLE {TABLE}")
    job = new_job(redis_conn, run_chunks)
    perform(job, upto=2)
    assert checkpoint_row(job.id) == (2, 2, False)


def test_finishing_prunes_old_rows_and_keeps_recent_and_unfinished_ones(redis_conn: Redis, shards) -> None:
    rows = {  # job id: (days since its last chunk, done)
        "old-done": (PRUNE_DONE_AFTER_DAYS + 1, 1),
        "old-unfinished": (PRUNE_DONE_AFTER_DAYS + 1, 0),
        "ancient-unfinished": (PRUNE_ANY_AFTER_DAYS + 1, 0),
        "recent-done": (1, 1),
    }
    for job_id, (days, done) in rows.items():
        query(
            f"INSERT INTO {TABLE} (job_id, job_created, cursor_json, chunks, done, updated_at) "
            "VALUES (%s, '', '1', 1, %s, NOW(6) - INTERVAL %s DAY)",
            (job_id, done, days),
        )
    job = new_job(redis_conn, run_chunks)
    perform(job, upto=1, finish=True)
    kept = {row[0] for row in query(f"SELECT job_id FROM {TABLE}")}
    assert kept == {"old-unfinished", "recent-done", job.id}
