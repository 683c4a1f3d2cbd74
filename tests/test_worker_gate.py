"""The whole loop on real Redis, MariaDB and worker processes."""

from __future__ import annotations

import signal
import time

import pymysql
import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.signals.cache import READING_KEY
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.tally.counters import read_counts
from easeoff.tasks.catalog import record_run
from easeoff.tasks.meta import META_KEY
from tests.conftest import (
    MYSQL,
    ConnectionHolder,
    WorkerProcesses,
    max_connections,
    mysql_status,
    stays_true,
    wait_until,
)
from tests.placement import misplaced


def ledger_count(shard: int, tag: str) -> int:
    conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM job_runs WHERE tag = %s", (tag,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def finished(redis: Redis, queue: str = "heavy") -> int:
    return FinishedJobRegistry(queue, connection=redis).count


def deferred(redis: Redis, queue: str = "heavy") -> int:
    return ScheduledJobRegistry(queue, connection=redis).count


def reading(redis: Redis, host: str) -> Reading | None:
    raw = redis.get(READING_KEY.format(host=host))
    return Reading.from_json(raw) if raw else None


def wait_for_probes(redis: Redis, host: str, seconds: float, what: str) -> None:
    """Until `host` has been probed again `seconds` after its reading now: so many intervals passed."""
    first = reading(redis, host)
    assert first is not None
    wait_until(lambda: (r := reading(redis, host)) and r.taken_at > first.taken_at + seconds, 20, what=what)


def meta(redis: Redis, job_id: str) -> dict:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta[META_KEY]


def test_jobs_run_while_healthy(redis_conn: Redis, shards, write_config, workers: WorkerProcesses) -> None:
    config = write_config()
    jobs = [record_run.enqueue(shard=1 + i % 2, tag="healthy", connection=redis_conn) for i in range(6)]
    proc = workers.start(config, "heavy", burst=True)
    assert proc.wait(timeout=60) == 0, workers.logs()
    assert finished(redis_conn) == 6
    assert ledger_count(1, "healthy") + ledger_count(2, "healthy") == 6
    assert misplaced(redis_conn, ["heavy"], [j.id for j in jobs]) == {}


@pytest.mark.parametrize("in_process", [False, True], ids=["forking", "in-process"])
def test_redis_says_the_worker_is_busy_while_its_job_runs_and_idle_once_it_ended(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    """What `rq info` and the page show: the BUSY write goes out once the run begins (the
    forking worker sends it while its horse runs) and IDLE is written at the job's end."""
    job = record_run.enqueue(shard=1, tag="state", seconds=3.0, connection=redis_conn)
    workers.start(write_config(), "heavy", in_process=in_process)

    def states() -> list[str]:
        return [w.get_state() for w in Worker.all(connection=redis_conn)]

    wait_until(lambda: StartedJobRegistry("heavy", connection=redis_conn).count == 1, 30, what="the job to start")
    wait_until(lambda: states() == ["busy"], 2, what="the worker to read busy while its 3 s job runs")
    assert ledger_count(1, "state") == 0, "the job ended before the worker read busy"
    wait_until(lambda: finished(redis_conn) == 1, 30, what="the job to finish")
    wait_until(lambda: states() == ["idle"], 10, what="the worker to read idle")
    assert Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).get_status() == "finished"


def strain_thresholds() -> tuple[float, float, int]:
    """high/low on the connections ratio just above today's baseline, and that baseline."""
    maximum = max_connections()
    baseline = int(mysql_status("Threads_connected"))
    return (baseline + 30) / maximum, (baseline + 15) / maximum, baseline


def test_strain_defers_then_hysteresis_holds_then_jobs_resume(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    high, low, _ = strain_thresholds()
    config = write_config(high=high, low=low)
    connections.hold(40)  # above high
    jobs = [record_run.enqueue(shard=1, tag="strained", connection=redis_conn) for _ in range(5)]
    workers.start(config, "heavy")

    wait_until(lambda: deferred(redis_conn) == 5, 20, what="all five jobs deferred")
    for job in jobs:
        info = meta(redis_conn, job.id)
        assert info["deferrals"] >= 1
        assert any(r.startswith("connections:db1 ") and "> high" in r for r in info["last_reasons"]), info
    assert ledger_count(1, "strained") == 0
    assert finished(redis_conn) == 0 and FailedJobRegistry("heavy", connection=redis_conn).count == 0
    assert misplaced(redis_conn, ["heavy"], [j.id for j in jobs]) == {}

    # Between low and high: still strained, however many probes pass.
    connections.hold(22)
    wait_for_probes(redis_conn, "db1", 2.0, what="four more probes in the band")
    in_band = reading(redis_conn, "db1")
    assert in_band is not None and low <= in_band.values["connections"] <= high, in_band
    assert in_band.strained["connections"] is True
    assert ledger_count(1, "strained") == 0 and finished(redis_conn) == 0

    # Below low: healthy again, and every deferred job runs once.
    connections.hold(0)
    wait_until(lambda: finished(redis_conn) == 5, 30, what="deferred jobs to run after strain cleared")
    assert ledger_count(1, "strained") == 5
    assert FailedJobRegistry("heavy", connection=redis_conn).count == 0
    assert misplaced(redis_conn, ["heavy"], [j.id for j in jobs]) == {}


def test_unreachable_host_defers_its_resources_only(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(shard2_hosts='["db1", "dead"]')
    healthy = [record_run.enqueue(shard=1, tag="reachable", connection=redis_conn) for _ in range(3)]
    blocked = [record_run.enqueue(shard=2, tag="unreachable", connection=redis_conn) for _ in range(3)]
    workers.start(config, "heavy")

    wait_until(lambda: finished(redis_conn) == 3 and deferred(redis_conn) == 3, 30, what="3 run, 3 deferred")
    assert ledger_count(1, "reachable") == 3 and ledger_count(2, "unreachable") == 0
    for job in blocked:
        assert any(r.startswith("probe_error:dead") for r in meta(redis_conn, job.id)["last_reasons"])
    assert StartedJobRegistry("heavy", connection=redis_conn).count == 0
    assert misplaced(redis_conn, ["heavy"], [j.id for j in healthy + blocked]) == {}


def test_counters_record_started_finished_failed_and_deferred(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:

    config = write_config(shard2_hosts='["db1", "dead"]')
    for _ in range(2):
        record_run.enqueue(shard=1, tag="count", connection=redis_conn)
    record_run.enqueue(shard=2, tag="count", connection=redis_conn)
    # A job that fails as it runs: its meta given by hand, since a plain job whose resources cannot
    # be worked out is refused before it runs (tests/test_plain_rq_gated.py).
    Queue("heavy", connection=redis_conn, serializer=JSONSerializer).enqueue_call(
        "easeoff.tasks.catalog.record_run", ("not-a-shard",), meta={META_KEY: {"task": "record_run"}}
    )
    workers.start(config, "heavy")
    wait_until(lambda: finished(redis_conn) == 2 and deferred(redis_conn) == 1, 20, what="2 run, 1 deferred")
    wait_until(lambda: FailedJobRegistry("heavy", connection=redis_conn).count == 1, 20, what="the bad job failed")
    counts = {
        kind: {(c.queue, c.task, c.reason): c.value for c in rows} for kind, rows in read_counts(redis_conn).items()
    }
    assert counts["finished"] == {("heavy", "record_run", ""): 2}
    assert counts["started"][("heavy", "record_run", "")] == 3
    assert counts["deferred"][("heavy", "record_run", "probe_error")] >= 1
    assert list(counts["failed"]) == [("heavy", "record_run", "ValueError")]


def test_no_churn_while_strained_and_release_on_clear(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    high, low, _ = strain_thresholds()
    config = write_config(high=high, low=low, interval=0.3, backoff_base=0.3, backoff_cap=0.6)
    connections.hold(40)
    jobs = [record_run.enqueue(shard=1, tag="churn", connection=redis_conn) for _ in range(20)]
    for _ in range(2):
        workers.start(config, "heavy")
    wait_until(lambda: deferred(redis_conn) == 20, 20, what="all twenty jobs deferred")

    def deferrals() -> int:
        return sum(int(v) for v in redis_conn.hvals("easeoff:counters:deferred"))

    before = deferrals()
    # Many backoff periods pass, yet parked jobs are not claimed and deferred again.
    stays_true(lambda: deferrals() == before and deferred(redis_conn) == 20, 4.0, what="no re-deferrals")
    assert before == 20
    assert redis_conn.pttl("easeoff:cooldown:shard:1") > 0

    connections.hold(0)
    wait_until(lambda: finished(redis_conn) == 20, 20, what="parked jobs released and run")
    assert ledger_count(1, "churn") == 20
    assert misplaced(redis_conn, ["heavy"], [j.id for j in jobs]) == {}


def test_an_idle_worker_stops_at_once_on_sigterm(redis_conn: Redis, write_config, workers: WorkerProcesses) -> None:
    """A warm shutdown of an idle worker takes moments, every time: its pub/sub listener waited
    up to a minute for a message, and redis-py 8.2's PubSubWorkerThread.stop() waits for it."""
    config = write_config()
    for _ in range(5):
        proc = workers.start(config, "heavy")

        def idle() -> bool:  # in its loop, its signal handlers installed
            names = redis_conn.smembers(Worker.redis_workers_keys)
            return any(redis_conn.hget(key, "state") == b"idle" for key in names)

        wait_until(idle, 30, what=f"the worker idle; {workers.logs()}")
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - began < 5, f"stopped after {time.monotonic() - began:.1f}s"
        assert proc.returncode == 0, workers.logs()
        redis_conn.delete(Worker.redis_workers_keys)
