"""rq's job model through easeoff (issue 25, item 1): `task.options(...).delay(...)`, and each option
keeping rq's meaning through the gate, in both worker modes, with deferrals in the path.

Deferrals come from a throttle switch at ratio 1 on the task (each claim is refused and the job
comes back after the backoff, so it is deferred again and again) or from real connection strain
on shard 1 (tests/test_worker_gate.py's thresholds)."""

from __future__ import annotations

import contextlib
import itertools
import time
from datetime import UTC, datetime, timedelta

import pymysql
import pytest
from redis import Redis
from rq import Callback, Retry
from rq.command import send_command, send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Dependency, Job
from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import Worker

from easeoff.feedback import clock
from easeoff.feedback.levers.switches import Switch, clear_switch, set_switch
from easeoff.tasks.catalog import (
    CALLBACKS_KEY,
    noted_failure,
    noted_stopped,
    noted_success,
    record_once,
    record_run,
    record_then_fail,
)
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.registry import TaskError
from easeoff.workers.moves import JobMoves
from tests.conftest import MYSQL, TEST_REDIS_URL, ConnectionHolder, WorkerProcesses, stays_true, wait_until
from tests.placement import misplaced
from tests.test_worker_gate import ledger_count, strain_thresholds

MODES = [pytest.param(False, id="forking"), pytest.param(True, id="in-process")]
FAST = {"interval": 0.25, "backoff_base": 0.2, "backoff_cap": 0.3}  # a throttled job is back within 0.3 s


def fetch(redis: Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)


def deferrals(redis: Redis, job_id: str) -> int:
    return JobMeta.of(fetch(redis, job_id)).deferrals


def throttle(redis: Redis, task: str) -> None:
    """Every claim of the task's jobs is refused: each is deferred, comes back, is deferred again."""
    set_switch(redis, Switch("throttle", f"task:{task}", "test", "hold it", clock.now(), ratio=1.0))


def unthrottle(redis: Redis, task: str) -> None:
    clear_switch(redis, f"throttle task:{task}", "test")


def finished(redis: Redis, job_id: str) -> bool:
    return job_id in FinishedJobRegistry("heavy", connection=redis).get_job_ids()


def failed(redis: Redis, job_id: str) -> bool:
    return job_id in FailedJobRegistry("heavy", connection=redis).get_job_ids()


def ledger_times(shard: int, tag: str) -> list[float]:
    conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT UNIX_TIMESTAMP(ran_at) FROM job_runs WHERE tag = %s ORDER BY id", (tag,))
            return [float(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()


def unreached() -> Redis:
    """A client that has not connected yet: a refusal must come before its first command."""
    return Redis.from_url(TEST_REDIS_URL)


def callbacks(redis: Redis, job_id: str) -> list[str]:
    return [c.decode() for c in redis.lrange(CALLBACKS_KEY.format(job_id=job_id), 0, -1)]


# -- the shape, on real Redis without a worker -------------------------------------------------


def test_options_reach_the_job_beside_the_tasks_own_arguments(redis_conn: Redis) -> None:
    job = record_run.options(
        connection=redis_conn,
        job_id="nightly-7",
        description="nightly recount, shard 1",
        timeout=90,
        result_ttl=600,
        failure_ttl=3600,
        ttl=120,
        meta={"app": "billing"},
        retry=Retry(max=3, interval=[5, 10]),
        on_success=noted_success,
        on_failure=Callback(noted_failure, timeout=5),
        on_stopped="easeoff.tasks.catalog.noted_stopped",
    ).delay(shard=1, tag="opts")
    stored = fetch(redis_conn, "nightly-7")
    assert (list(stored.args), stored.kwargs) == ([], {"shard": 1, "tag": "opts"})
    assert stored.description == "nightly recount, shard 1"
    assert (stored.timeout, stored.result_ttl, stored.failure_ttl, stored.ttl) == (90, 600, 3600, 120)
    assert (stored.retries_left, stored.retry_intervals) == (3, [5, 10])
    assert stored.meta["app"] == "billing" and JobMeta.of(stored).resources == ("shard:1",)
    assert (stored.success_callback, stored.failure_callback, stored.stopped_callback) == (
        noted_success,
        noted_failure,
        noted_stopped,
    )
    assert stored.failure_callback_timeout == 5
    assert 0 < redis_conn.ttl(stored.key) <= 120
    assert job.id == "nightly-7" and redis_conn.lrange("rq:queue:heavy", 0, -1) == [b"nightly-7"]

    # Options chain, the later wins; at_front puts the job at the head, as rq's does.
    front = record_run.options(connection=redis_conn).options(at_front=True).delay(shard=1)
    assert redis_conn.lrange("rq:queue:heavy", 0, -1) == [front.id.encode(), b"nightly-7"]
    # A task's own argument named like an option is the task's (here, `tag`); plain `enqueue` is as before.
    plain = record_run.enqueue(1, tag="x", connection=redis_conn, job_id="plain-1")
    assert plain.id == "plain-1" and fetch(redis_conn, "plain-1").kwargs == {"tag": "x"}


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"repeat": object()}, "job option repeat is refused: rq's Repeat is not carried through easeoff"),
        ({"rate_limit": object()}, "job option rate_limit is refused: rq's RateLimit would hold slots"),
        ({"webhooks": []}, "job option webhooks is refused"),
        ({"pipeline": None}, "job option pipeline is refused"),
        ({"group_id": "g"}, "job option group_id is refused: rq's groups are not supported"),
        ({"colour": "red"}, "unknown job option 'colour'"),
        ({"retry": 3}, "job option retry=3: must be rq's Retry"),
        ({"ttl": 0}, "job option ttl=0: must be a positive number of seconds"),
        ({"result_ttl": "1h"}, "job option result_ttl='1h'"),
        ({"meta": {"easeoff": {}}}, "the key 'easeoff' is easeoff's own"),
        ({"on_success": lambda *a: None}, "a lambda or nested function cannot be found by the worker"),
        ({"depends_on": 7}, "must be a job, a job id, rq's Dependency"),
        ({"timeout": 30, "job_timeout": 30}, "job option timeout given twice"),
        ({"unique": True}, "unique=True needs a job_id"),
        ({"unique": True, "job_id": "u", "depends_on": "p"}, "unique and depends_on do not go together"),
    ],
)
@pytest.mark.unit
def test_a_bad_or_refused_option_is_one_line_naming_it(given: dict, says: str) -> None:
    """Refused before a word goes to Redis: the unit tier's guard fails the test on any connect."""
    with pytest.raises(TaskError) as refused:
        record_run.options(connection=unreached(), **given).delay(shard=1)
    text = str(refused.value)
    assert says in text and text.startswith("task record_run: ") and "\n" not in text, text


@pytest.mark.unit
def test_an_option_given_to_delay_points_to_options() -> None:
    with pytest.raises(TaskError) as refused:
        record_run.delay(shard=1, depends_on="parent", connection=unreached())
    assert str(refused.value) == (
        "task record_run: depends_on is a job option, not an argument: "
        "give it as record_run.options(depends_on=...).delay(...)"
    )


def test_connection_is_taken_where_the_tasks_own_enqueue_takes_it(redis_conn: Redis) -> None:
    """As an app writes it from HeavyTask.enqueue: `.options(...).delay(..., connection=r)`,
    and the same for enqueue_in / enqueue_at; the job lands in that Redis, not the config's."""
    parent = record_run.options(result_ttl=60).delay(shard=1, tag="conn", connection=redis_conn)
    child = record_run.options(depends_on=parent).enqueue(shard=1, tag="child", connection=redis_conn)
    later = record_run.options().enqueue_in(timedelta(seconds=30), shard=1, tag="later", connection=redis_conn)
    at = record_run.options().enqueue_at(datetime.now(UTC) + timedelta(seconds=30), shard=1, connection=redis_conn)
    for job in (parent, child, later, at):
        assert Job.exists(job.id, connection=redis_conn)
    assert Job.fetch(parent.id, connection=redis_conn, serializer=JSONSerializer).kwargs["tag"] == "conn"
    assert set(ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids()) == {later.id, at.id}


@pytest.mark.unit
def test_a_scheduled_dependent_is_refused() -> None:
    """rq's scheduler enqueues a due job without looking at its parents: refused, not lost meaning."""
    with pytest.raises(TaskError, match="depends_on does not go with enqueue_in/enqueue_at"):
        record_run.options(connection=unreached(), depends_on="p").enqueue_in(timedelta(seconds=5), shard=1)


def test_a_scheduled_job_at_front_is_promoted_to_the_head(redis_conn: Redis) -> None:
    behind = record_run.enqueue(shard=1, connection=redis_conn)
    due = datetime.now(UTC) - timedelta(seconds=1)
    front = record_run.options(connection=redis_conn, at_front=True).enqueue_at(due, shard=1)
    later = record_run.enqueue_in(timedelta(hours=1), shard=1, connection=redis_conn)
    scheduled = ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids()
    assert sorted(scheduled) == sorted([front.id, later.id])
    from rq import Queue

    assert JobMoves(redis_conn).promote([Queue("heavy", connection=redis_conn, serializer=JSONSerializer)]) == 1
    assert redis_conn.lrange("rq:queue:heavy", 0, -1) == [front.id.encode(), behind.id.encode()]


def test_a_unique_id_refuses_a_duplicate_whether_queued_or_scheduled(redis_conn: Redis) -> None:
    unique = record_run.options(connection=redis_conn, job_id="once", unique=True)
    unique.delay(shard=1)
    with pytest.raises(TaskError, match="job id 'once' exists already"):
        unique.delay(shard=2)
    with pytest.raises(TaskError, match="job id 'once' exists already"):
        unique.enqueue_in(timedelta(seconds=30), shard=2)
    assert redis_conn.llen("rq:queue:heavy") == 1 and fetch(redis_conn, "once").kwargs == {"shard": 1}


# -- through real workers, a deferral in the path ----------------------------------------------


@pytest.mark.parametrize("in_process", MODES)
def test_a_dependent_waits_for_a_parent_deferred_three_times(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    throttle(redis_conn, "record_run")
    parent = record_run.enqueue(shard=1, tag="parent", connection=redis_conn)
    child = record_once.options(connection=redis_conn, depends_on=parent).delay(shard=2, tag="child")
    also = record_once.options(connection=redis_conn, depends_on=Dependency([parent.id])).delay(shard=2, tag="also")
    assert fetch(redis_conn, child.id).get_status() == "deferred"
    workers.start(write_config(**FAST), "heavy", in_process=in_process)
    wait_until(lambda: deferrals(redis_conn, parent.id) >= 3, 20, what="the parent deferred three times")
    assert fetch(redis_conn, parent.id).get_status() in ("scheduled", "queued", "started")
    assert sorted(DeferredJobRegistry("heavy", connection=redis_conn).get_job_ids()) == sorted([child.id, also.id])
    assert not finished(redis_conn, child.id) and redis_conn.llen("rq:queue:heavy") <= 1

    unthrottle(redis_conn, "record_run")
    wait_until(lambda: finished(redis_conn, child.id) and finished(redis_conn, also.id), 20, what="the dependents")
    assert ledger_count(1, "parent") == 1
    parent_done, child_done = fetch(redis_conn, parent.id), fetch(redis_conn, child.id)
    assert parent_done.ended_at is not None and child_done.started_at is not None
    assert child_done.started_at >= parent_done.ended_at
    assert deferrals(redis_conn, child.id) == 0  # it waited in rq's deferred registry, not in the gate
    assert misplaced(redis_conn, ["heavy"], [parent.id, child.id, also.id]) == {}


@pytest.mark.parametrize("in_process", MODES)
def test_a_dependent_waits_for_a_parked_parent(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    """A parent parked on its paused resource (deferred once, then left in the scheduled registry
    until the resource clears): the dependent waits, then runs after it."""
    set_switch(redis_conn, Switch("pause", "resource:shard:1", "test", "hold it", clock.now()))
    parent = record_run.enqueue(shard=1, tag="parked-parent", connection=redis_conn)
    child = record_once.options(connection=redis_conn, depends_on=parent.id).delay(shard=2)
    workers.start(write_config(**FAST), "heavy", in_process=in_process)
    wait_until(lambda: deferrals(redis_conn, parent.id) >= 1, 20, what="the parent deferred")
    stays_true(
        lambda: fetch(redis_conn, child.id).get_status() == "deferred" and deferrals(redis_conn, parent.id) == 1,
        2.0,
        what="the parent parked, its dependent waiting",
    )
    clear_switch(redis_conn, "pause resource:shard:1", "test")
    wait_until(lambda: finished(redis_conn, child.id), 20, what="the dependent run after the parent")
    assert fetch(redis_conn, child.id).started_at >= fetch(redis_conn, parent.id).ended_at
    assert misplaced(redis_conn, ["heavy"], [parent.id, child.id]) == {}


@pytest.mark.parametrize("in_process", MODES)
def test_an_enqueue_in_job_on_a_strained_shard_waits_for_the_strain(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder, in_process: bool
) -> None:
    high, low, _ = strain_thresholds()
    connections.hold(40)  # shard 1 strained
    workers.start(write_config(high=high, low=low, interval=0.25), "heavy", in_process=in_process)
    job = record_run.enqueue_in(timedelta(seconds=1), shard=1, tag="later", connection=redis_conn)
    assert job.id in ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids()
    due = time.monotonic() + 1
    wait_until(lambda: time.monotonic() > due + 2, 10, what="two seconds past its due time")
    stays_true(lambda: ledger_count(1, "later") == 0, 2, what="not run on the strained shard")
    held = fetch(redis_conn, job.id)
    assert held.get_status() in ("scheduled", "queued")  # parked by promotion, or deferred by the claim
    connections.hold(0)
    wait_until(lambda: finished(redis_conn, job.id), 30, what="run once the strain clears")
    assert ledger_count(1, "later") == 1
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


@pytest.mark.parametrize("in_process", MODES)
def test_a_deferral_spends_no_retry_and_retry_intervals_hold(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    throttle(redis_conn, "record_then_fail")
    job = record_then_fail.options(connection=redis_conn, retry=Retry(max=2, interval=[2, 3])).delay(
        shard=1, tag="retried"
    )
    workers.start(write_config(**FAST), "heavy", in_process=in_process)
    wait_until(lambda: deferrals(redis_conn, job.id) >= 3, 20, what="the job deferred three times")
    assert fetch(redis_conn, job.id).retries_left == 2 and ledger_times(1, "retried") == []

    unthrottle(redis_conn, "record_then_fail")
    wait_until(lambda: failed(redis_conn, job.id), 30, what="the job failed once its retries were spent")
    runs = ledger_times(1, "retried")
    assert len(runs) == 3, runs  # the first run and two retries
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    # rq schedules a retry at whole seconds (its registry's score), easeoff promotes within 2 s of due.
    assert 1.0 <= gaps[0] <= 2 + 3.5 and 2.0 <= gaps[1] <= 3 + 3.5, gaps
    stored = fetch(redis_conn, job.id)
    assert stored.retries_left == 0 and "fails on purpose" in (stored.latest_result().exc_string or "")
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


@pytest.mark.parametrize("in_process", MODES)
def test_callbacks_run_once_after_the_admitted_run_never_on_a_deferral(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    throttle(redis_conn, "record_run")
    throttle(redis_conn, "record_then_fail")
    every = {"on_success": noted_success, "on_failure": noted_failure, "on_stopped": noted_stopped}
    ok = record_run.options(connection=redis_conn, result_ttl=60, **every).delay(shard=1, tag="cb-ok")
    bad = record_then_fail.options(connection=redis_conn, failure_ttl=60, **every).delay(shard=1, tag="cb-bad")
    workers.start(write_config(**FAST), "heavy", in_process=in_process)
    wait_until(
        lambda: deferrals(redis_conn, ok.id) >= 2 and deferrals(redis_conn, bad.id) >= 2, 20, what="both deferred"
    )
    assert callbacks(redis_conn, ok.id) == [] and callbacks(redis_conn, bad.id) == []

    unthrottle(redis_conn, "record_run")
    unthrottle(redis_conn, "record_then_fail")
    wait_until(lambda: finished(redis_conn, ok.id) and failed(redis_conn, bad.id), 20, what="both ended")
    stays_true(
        lambda: callbacks(redis_conn, ok.id) == ["success"] and callbacks(redis_conn, bad.id) == ["failure"],
        1.0,
        what="each callback called once",
    )
    assert 0 < redis_conn.ttl(ok.key) <= 60  # result_ttl kept through the gate
    assert 0 < redis_conn.zscore(FailedJobRegistry("heavy", connection=redis_conn).key, bad.id) - time.time() <= 61


@pytest.mark.parametrize("in_process", MODES)
def test_a_unique_job_deferred_still_refuses_its_duplicate_and_runs_once(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    throttle(redis_conn, "record_run")
    unique = record_run.options(connection=redis_conn, job_id="nightly", unique=True)
    unique.delay(shard=1, tag="unique")
    workers.start(write_config(**FAST), "heavy", in_process=in_process)
    wait_until(lambda: deferrals(redis_conn, "nightly") >= 2, 20, what="the unique job deferred")
    with pytest.raises(TaskError, match="job id 'nightly' exists already"):
        unique.delay(shard=1, tag="unique")
    unthrottle(redis_conn, "record_run")
    wait_until(lambda: finished(redis_conn, "nightly"), 20, what="the unique job run")
    with pytest.raises(TaskError, match="job id 'nightly' exists already"):
        unique.delay(shard=1, tag="unique")
    stays_true(lambda: ledger_count(1, "unique") == 1, 1.0, what="run once")


@pytest.mark.parametrize("in_process", MODES)
def test_a_jobs_ttl_runs_from_its_enqueue_through_its_deferrals_and_it_lapses_unrun(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    """rq's `ttl`: how long a job may wait to start, from its enqueue. The claim keeps the job's
    key while the job is ours; a deferral is no new enqueue, so the key gets its first deadline
    back: a job deferred again and again (a throttle at ratio 1 refuses each claim) lapses about
    its ttl after it was enqueued, however many times it was deferred meanwhile."""
    throttle(redis_conn, "record_run")
    enqueued = redis_time(redis_conn)
    job = record_run.options(connection=redis_conn, ttl=3).delay(shard=1, tag="ttl")
    keeper = record_run.enqueue(shard=1, tag="no-ttl", connection=redis_conn)
    workers.start(write_config(**FAST), "heavy", in_process=in_process)
    seen = [0]

    def lapsed() -> bool:
        if not Job.exists(job.id, connection=redis_conn):
            return True
        with contextlib.suppress(NoSuchJobError):  # it may lapse between the two reads
            seen[0] = max(seen[0], deferrals(redis_conn, job.id))
        return False

    wait_until(lapsed, 10, interval=0.05, what="the ttl job lapsed")
    gone = redis_time(redis_conn)
    assert seen[0] >= 3, seen  # deferred over and over, each deferral within its first 3 s
    assert 2.5 <= gone - enqueued <= 4.0, gone - enqueued  # 3 s from its enqueue, not from a deferral
    assert deferrals(redis_conn, keeper.id) >= 3 and redis_conn.ttl(keeper.key) == -1  # no ttl: kept
    unthrottle(redis_conn, "record_run")
    wait_until(lambda: finished(redis_conn, keeper.id), 20, what="the other job run")
    assert ledger_count(1, "ttl") == 0 and ledger_count(1, "no-ttl") == 1


def test_a_stop_job_command_that_comes_after_the_worker_deferred_the_job_cancels_it_where_it_waits(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    """The command reaches the worker late (the job was `started` when it was sent): the job is
    not lost to the deferral, it is canceled where it waits, and never runs."""
    throttle(redis_conn, "record_run")
    job = record_run.enqueue(shard=1, tag="stopped-late", seconds=30, connection=redis_conn)
    worker = workers.start(write_config(interval=0.25, backoff_base=30, backoff_cap=30), "heavy")
    wait_until(lambda: deferrals(redis_conn, job.id) == 1, 20, what="the job deferred for 30 s")
    send_command(redis_conn, only_worker_name(redis_conn), "stop-job", job_id=job.id)
    wait_until(lambda: fetch(redis_conn, job.id).get_status() == "canceled", 10, what="the job canceled")
    assert job.id not in redis_conn.lrange("rq:queue:heavy", 0, -1)
    assert worker.poll() is None and ledger_count(1, "stopped-late") == 0


def test_a_stop_job_command_sent_to_a_worker_that_no_longer_holds_the_job_is_passed_to_the_one_that_does(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    job = record_run.options(connection=redis_conn, on_stopped=noted_stopped).delay(
        shard=1, tag="stopped-passed-on", seconds=30
    )
    config = write_config(**FAST)
    workers.start(config, "heavy")
    wait_until(lambda: fetch(redis_conn, job.id).get_status() == "started", 20, what="the job running")
    holder = fetch(redis_conn, job.id).worker_name
    workers.start(config, "heavy")
    other = wait_until(
        lambda: next((n for n in worker_names(redis_conn) if n != holder), None), 20, what="a 2nd worker"
    )
    send_command(redis_conn, other, "stop-job", job_id=job.id)
    wait_until(lambda: fetch(redis_conn, job.id).get_status() == "stopped", 20, what="the job stopped")
    stays_true(lambda: callbacks(redis_conn, job.id) == ["stopped"], 1.0, what="the stopped callback, once")


def worker_names(redis: Redis) -> list[str]:
    return [w.name for w in Worker.all(connection=redis)]


def only_worker_name(redis: Redis) -> str:
    (name,) = worker_names(redis)
    return name


def ending(redis: Redis, job_id: str) -> str | None:
    status = fetch(redis, job_id).get_status()
    return status if status in ("stopped", "canceled") else None


def redis_time(redis: Redis) -> float:
    seconds, micros = redis.time()
    return seconds + micros / 1e6


# Forking only: rq's stop-job command in an in-process worker (no horse to kill) comes with
# `easeoff cancel` (issue 25, item 4), whose tests cover it there.
@pytest.mark.parametrize("in_process", MODES[:1])
def test_a_stopped_callback_runs_once_when_rqs_stop_job_ends_an_admitted_run(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    throttle(redis_conn, "record_run")
    every = {"on_success": noted_success, "on_failure": noted_failure, "on_stopped": noted_stopped}
    job = record_run.options(connection=redis_conn, **every).delay(shard=1, tag="stopped", seconds=30)
    workers.start(write_config(**FAST), "heavy", in_process=in_process)
    wait_until(lambda: deferrals(redis_conn, job.id) >= 2, 20, what="the job deferred")
    unthrottle(redis_conn, "record_run")
    wait_until(lambda: fetch(redis_conn, job.id).get_status() == "started", 20, what="the job running")
    assert callbacks(redis_conn, job.id) == []
    send_stop_job_command(redis_conn, job.id, serializer=JSONSerializer)
    wait_until(lambda: fetch(redis_conn, job.id).get_status() == "stopped", 20, what="the job stopped")
    stays_true(lambda: callbacks(redis_conn, job.id) == ["stopped"], 1.0, what="the stopped callback, once")


@pytest.mark.parametrize("in_process", MODES)
def test_rqs_stop_job_sent_while_the_gate_judges_a_claimed_job_stops_it_unrun_and_keeps_the_worker(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    """A claimed job is `started` in Redis while the gate judges it: rq's stop-job command sent
    then is honoured (STOPPED, its stopped callback once, never run), and it kills nothing else
    (rq's own handler would kill the worker's process group: no horse yet, pid 0)."""
    throttle(redis_conn, "record_run")
    every = {"on_success": noted_success, "on_failure": noted_failure, "on_stopped": noted_stopped}
    job = record_run.options(connection=redis_conn, **every).delay(shard=1, tag="stopped-unrun", seconds=30)
    worker = workers.start(write_config(**FAST), "heavy", in_process=in_process)

    def stop_sent() -> bool:  # accepted only while the job is `started`: claimed, in the gate
        with contextlib.suppress(InvalidJobOperation):
            send_stop_job_command(redis_conn, job.id, serializer=JSONSerializer)
            return True
        return False

    wait_until(stop_sent, 20, interval=0.002, what="a stop sent while the job was claimed")
    # Noted before the gate's decision, it ends STOPPED; landing after the gate deferred it, it is
    # canceled where it waits. Either way it never runs, nor comes back.
    ended = wait_until(lambda: ending(redis_conn, job.id), 20, what="the job stopped or canceled")
    unthrottle(redis_conn, "record_run")
    expected = ["stopped"] if ended == "stopped" else []
    stays_true(lambda: callbacks(redis_conn, job.id) == expected, 1.0, what=f"callbacks {expected}")
    assert ledger_count(1, "stopped-unrun") == 0  # never ran
    assert worker.poll() is None  # the worker lives on, and runs the next job
    other = record_once.enqueue(shard=1, tag="after-the-stop", connection=redis_conn)
    wait_until(lambda: finished(redis_conn, other.id), 20, what="the next job run")


@pytest.mark.parametrize("in_process", MODES)
def test_a_parent_failed_at_its_deferral_cap_releases_only_the_dependents_that_allow_failure(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    """As when rq fails a parent: `Dependency(..., allow_failure=True)` runs, the others stay deferred."""
    throttle(redis_conn, "record_run")
    parent = record_run.enqueue(shard=1, tag="capped-parent", connection=redis_conn)
    tolerant = record_once.options(connection=redis_conn, depends_on=Dependency([parent], allow_failure=True)).delay(
        shard=2, tag="tolerant"
    )
    strict = record_once.options(connection=redis_conn, depends_on=parent).delay(shard=2, tag="strict")
    workers.start(write_config(**FAST, backoff_extra="max_deferrals = 2"), "heavy", in_process=in_process)
    wait_until(lambda: failed(redis_conn, parent.id), 20, what="the parent failed at its deferral cap")
    wait_until(lambda: finished(redis_conn, tolerant.id), 20, what="the dependent that allows failure run")
    stays_true(lambda: fetch(redis_conn, strict.id).get_status() == "deferred", 1.0, what="the strict one waits")
    assert DeferredJobRegistry("heavy", connection=redis_conn).get_job_ids() == [strict.id]
