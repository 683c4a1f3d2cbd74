"""Which failures are retried, and when (tasks/retry_on.py, workers/transient_errors.py): pure
rules, no servers; plus db_reach's view of a run's commits on a real MariaDB connection."""

from __future__ import annotations

import json
import random
import threading

import pymysql
import pytest

from easeoff.feedback.config import parse_config
from easeoff.tasks import db_reach
from easeoff.tasks.meta import META_KEY, JobMeta
from easeoff.tasks.registry import TaskError, heavy_task
from easeoff.tasks.retry_on import DEFAULT_RETRY_ON, TransientError, matching
from easeoff.workers.ending_moves import _restart_deferral_clocks
from easeoff.workers.transient_errors import NotRetried, RetryPlan, plan_retry, unsafe_to_rerun
from tests import retry_tasks  # noqa: F401 - registers the tasks the plans below name
from tests.conftest import MYSQL

CONFIG = parse_config(
    """
[probe]
interval = 0.5
[backoff]
base = 1.0
cap = 8.0
[mysql.hosts.a]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["a"]
[signals.connections]
high = 0.8
low = 0.6
""",
    "retries.toml",
    {},
)
DEADLOCK = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
LOCK_WAIT = pymysql.err.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")
LOST = pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")
SYNTAX = pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax")


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
    ("error", "label"),
    [
        (DEADLOCK, "deadlock"),
        (LOCK_WAIT, "lock_wait_timeout"),
        (LOST, "connection_lost"),
        (pymysql.err.OperationalError(2006, "MySQL server has gone away"), "connection_lost"),
        (wrapped(DEADLOCK), "deadlock"),  # a task (or an ORM) wrapping the driver's error
        (SYNTAX, None),
        (ValueError("a bug"), None),
    ],
)
def test_the_default_set_names_deadlocks_lock_waits_and_lost_connections(error: BaseException, label: str) -> None:
    found = matching(error, DEFAULT_RETRY_ON)
    assert (found.label if found else None) == label


@pytest.mark.unit
def test_a_task_names_codes_and_classes_of_its_own() -> None:
    timeout = TransientError("TimeoutError", False, "TimeoutError: slow")
    assert matching(TimeoutError("slow"), (TimeoutError,)) == timeout
    assert matching(DEADLOCK, (TimeoutError,)) is None
    found = matching(SYNTAX, (1064,))
    assert found is not None and found.label == "mysql_1064" and not found.rolled_back
    assert matching(DEADLOCK, ()) is None


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["1213", [1213, "deadlock"], [0], [True], [object], 3.5])
def test_a_bad_retry_on_is_refused_at_declaration(bad: object) -> None:
    with pytest.raises(TaskError, match="retry_on"):
        heavy_task(queue="heavy", retry_on=bad)  # type: ignore[arg-type]


@pytest.mark.unit
@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_bad_retries_is_refused_at_declaration(bad: object) -> None:
    with pytest.raises(TaskError, match="retries"):
        heavy_task(queue="heavy", retries=bad)  # type: ignore[arg-type]


PLAIN, SAFE = JobMeta(), JobMeta(idempotent=True)
ROLLED_BACK, LOST_MIDWAY = matching(DEADLOCK, DEFAULT_RETRY_ON), matching(LOST, DEFAULT_RETRY_ON)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("error", "meta", "reached", "committed", "safe"),
    [
        (ROLLED_BACK, PLAIN, True, False, True),  # the server undid the only transaction
        (ROLLED_BACK, PLAIN, True, True, False),  # an earlier commit would be applied twice
        (ROLLED_BACK, SAFE, True, True, True),
        (ROLLED_BACK, JobMeta(resumable=True), True, True, True),  # resumes from its checkpoint
        (LOST_MIDWAY, PLAIN, True, False, False),  # the lost statement may have been applied
        (LOST_MIDWAY, SAFE, True, True, True),
        (TransientError("TimeoutError", False, ""), PLAIN, False, False, True),  # never reached a database
        (TransientError("TimeoutError", False, ""), PLAIN, True, False, False),
    ],
)
def test_only_a_run_that_cannot_apply_a_write_twice_is_retried(
    error: TransientError, meta: JobMeta, reached: bool, committed: bool, safe: bool
) -> None:
    assert (unsafe_to_rerun(error, meta, reached, committed) is None) is safe


@pytest.mark.unit
def test_a_retry_is_planned_with_backoff_until_the_tasks_retries_are_spent() -> None:
    rng = random.Random(7)
    meta = JobMeta(task="lock_two_rows")  # retries=2
    delays = []
    for spent in range(2):
        plan = plan_retry(DEADLOCK, meta, True, False, CONFIG, rng)
        assert isinstance(plan, RetryPlan), plan
        assert plan.meta.retries == spent + 1 and plan.meta.deferrals == 0
        assert plan.meta.last_error is not None and "Deadlock found" in plan.meta.last_error
        assert CONFIG.probe_interval <= plan.delay <= 8.0
        delays.append(plan.delay)
        meta = plan.meta
    spent_plan = plan_retry(DEADLOCK, meta, True, False, CONFIG, rng)
    assert isinstance(spent_plan, NotRetried) and "retries spent (2 of 2)" in spent_plan.why


@pytest.mark.unit
def test_no_plan_for_an_error_the_task_does_not_name_or_a_job_without_a_task() -> None:
    rng = random.Random(1)
    assert plan_retry(SYNTAX, JobMeta(task="lock_two_rows"), True, False, CONFIG, rng) is None
    assert plan_retry(DEADLOCK, JobMeta(task="lock_two_rows_never_retried"), True, False, CONFIG, rng) is None
    assert plan_retry(DEADLOCK, JobMeta(task=""), True, False, CONFIG, rng) is None  # plain rq: rq's Retry
    unsafe = plan_retry(DEADLOCK, JobMeta(task="lock_two_rows"), True, True, CONFIG, rng)
    assert isinstance(unsafe, NotRetried) and "committed" in unsafe.why


def test_a_runs_commits_are_seen_on_its_own_thread() -> None:
    """db_reach counts what the job's thread may have committed: commit(), a COMMIT statement,
    and writes in autocommit mode; reads in autocommit mode and other threads' writes are not."""
    conn = pymysql.connect(**MYSQL, autocommit=False)
    try:
        mark = db_reach.mark()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.execute("DO 1")  # a statement inside an open transaction: nothing committed yet
        assert not db_reach.committed_since(mark)
        conn.rollback()
        assert not db_reach.committed_since(mark)
        conn.commit()
        assert db_reach.committed_since(mark)

        mark = db_reach.mark()
        with conn.cursor() as cur:
            cur.execute("COMMIT")
        assert db_reach.committed_since(mark)

        mark = db_reach.mark()
        conn.autocommit(True)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.execute("SHOW GLOBAL STATUS LIKE 'Uptime'")
        assert not db_reach.committed_since(mark)  # reads commit nothing
        others = threading.Thread(target=lambda: pymysql.connect(**MYSQL, autocommit=True).query("DO 1"))
        others.start()
        others.join()
        assert not db_reach.committed_since(mark)  # a probe's heartbeat write beside an in-process job
        with conn.cursor() as cur:
            cur.execute("DO 1")
        assert db_reach.committed_since(mark)
    finally:
        conn.close()


@pytest.mark.unit
def test_a_requeued_job_gets_its_retries_back() -> None:
    """`easeoff requeue` of a job that failed after spending its retries: the next deadlock is retried."""
    spent = JobMeta(task="lock_two_rows", retries=2, last_error="OperationalError: (1213, 'Deadlock found')")
    raw = json.dumps({META_KEY: spent.to_dict(), "app": 1}).encode()
    restarted = json.loads(_restart_deferral_clocks(raw))
    again = JobMeta.from_dict(restarted[META_KEY])
    assert again.retries == 0 and restarted["app"] == 1
    assert isinstance(plan_retry(DEADLOCK, again, True, False, CONFIG, random.Random(3)), RetryPlan)
