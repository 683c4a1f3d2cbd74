"""A job whose database fails it mid-run (unreachable, restarting) is deferred, not failed: the
probe had not seen the strain yet. Pure rules first, then a real worker against a dead port."""

from __future__ import annotations

import json
import signal

import pymysql
import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks import db_reach, pool
from easeoff.tasks.catalog import record_run, record_then_visit
from easeoff.tasks.meta import META_KEY, JobMeta
from easeoff.workers.db_outages import outage_reason
from tests.conftest import MYSQL, WorkerProcesses, wait_until

PLAIN, IDEMPOTENT = JobMeta(), JobMeta(idempotent=True)


def wrapped(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except pymysql.MySQLError as exc:
            raise RuntimeError("the task's own error") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.unit
@pytest.mark.parametrize(
    ("error", "meta", "deferred"),
    [
        (pymysql.err.OperationalError(2003, "Can't connect"), PLAIN, True),  # never reached it: any task
        (pymysql.err.OperationalError(1040, "Too many connections"), PLAIN, True),
        (pymysql.err.OperationalError(2013, "Lost connection"), PLAIN, False),  # may have half-applied
        (pymysql.err.OperationalError(2013, "Lost connection"), IDEMPOTENT, True),
        (pymysql.err.OperationalError(2006, "gone away"), JobMeta(resumable=True), True),
        (pymysql.err.OperationalError(1045, "Access denied"), PLAIN, False),  # a config error: fail loudly
        (pymysql.err.ProgrammingError(1064, "syntax"), IDEMPOTENT, False),
        (wrapped(pymysql.err.OperationalError(2003, "Can't connect")), PLAIN, True),
        (ValueError("a bug"), IDEMPOTENT, False),
    ],
)
def test_which_failures_are_outages(error: BaseException, meta: JobMeta, deferred: bool) -> None:
    assert (outage_reason(error, meta) is not None) is deferred


def ledger_rows(job_id: str) -> int:
    conn = pymysql.connect(**MYSQL, database="easeoff_shard1")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM job_runs WHERE job_id = %s", (job_id,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_a_job_whose_database_is_unreachable_is_deferred_then_runs(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate admits (db1 probes fine) but the task's own connection goes to a dead port: the
    job is deferred with the reason, spends no failure, and runs once the database is back."""
    config = write_config(interval=0.3, backoff_base=0.3, backoff_cap=0.6)
    job = record_run.enqueue(shard=1, tag="outage", connection=redis_conn)
    monkeypatch.setenv("EASEOFF_SHARD_URLS", json.dumps({"1": "mysql://root@127.0.0.1:1"}))
    cut_off = workers.start(config, "heavy")

    def reasons() -> list[str]:
        meta = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).meta.get(META_KEY, {})
        return meta.get("last_reasons", [])

    wait_until(lambda: any(r.startswith("db_unreachable:shard:1") for r in reasons()), 20, what="the outage deferral")
    assert "cannot connect (2003)" in reasons()[0], reasons()
    assert job.id not in FailedJobRegistry("heavy", connection=redis_conn).get_job_ids()
    assert sum(int(v) for v in redis_conn.hvals("easeoff:counters:failed")) == 0  # no failure counted
    cut_off.send_signal(signal.SIGTERM)
    cut_off.wait(timeout=15)

    monkeypatch.delenv("EASEOFF_SHARD_URLS")
    workers.start(config, "heavy")
    wait_until(
        lambda: job.id in FinishedJobRegistry("heavy", connection=redis_conn).get_job_ids(), 20, what="the job to run"
    )
    assert ledger_rows(job.id) == 1
    assert job.id not in ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("reached", "meta", "deferred"), [(True, PLAIN, False), (True, IDEMPOTENT, True), (False, PLAIN, True)]
)
def test_a_refused_connection_after_an_earlier_one_is_an_outage_only_for_a_task_safe_to_rerun(
    reached: bool, meta: JobMeta, deferred: bool
) -> None:
    error = pymysql.err.OperationalError(2003, "Can't connect")
    assert (outage_reason(error, meta, reached) is not None) is deferred


def test_the_connections_a_run_makes_and_borrows_are_seen(shards) -> None:
    mark = db_reach.mark()
    assert not db_reach.reached_since(mark)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=1, user="root", connect_timeout=1)
    assert not db_reach.reached_since(mark)  # a refused connection reached nothing
    pymysql.connect(**MYSQL).close()
    assert db_reach.reached_since(mark)
    mark = db_reach.mark()
    with pool.borrow("reach-test", lambda: pymysql.connect(**MYSQL)):
        pass
    mark = db_reach.mark()
    with pool.borrow("reach-test", lambda: pymysql.connect(**MYSQL)):  # the kept one, lent again
        pass
    assert db_reach.reached_since(mark)
    pool.close_all()


def test_a_job_that_wrote_before_a_connection_was_refused_fails_and_never_runs_twice(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ledger row is written over a first connection; its second connection (another shard,
    as a server going down mid-job) is refused. Deferring it as 'never reached' would run it
    again and write the row twice: it fails with the reason instead."""
    config = write_config(interval=0.3, backoff_base=0.3, backoff_cap=0.6)
    monkeypatch.setenv(
        "EASEOFF_SHARD_URLS", json.dumps({"1": f"mysql://root@{MYSQL['host']}:3306", "2": "mysql://root@127.0.0.1:1"})
    )
    job = record_then_visit.enqueue(shard=1, then=2, connection=redis_conn)
    workers.start(config, "heavy")
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in failed.get_job_ids(), 20, what=f"the job to fail; {workers.logs()}")
    assert ledger_rows(job.id) == 1
    fetched = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    assert JobMeta.of(fetched).deferrals == 0
    assert "2003" in (fetched.latest_result().exc_string or ""), fetched.latest_result()
