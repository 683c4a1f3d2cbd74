"""`easeoff job ID` in each state a job can be in, and `easeoff cancel` in each, on real Redis and
real workers: the job's place, what it waits for, its deferrals and outcome; a cancel that takes
out the one job, atomically, and leaves the rest of its queue and every other job's parked
entries as they were."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import CanceledJobRegistry, DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback import keys
from easeoff.feedback.levers.rates import RESERVED_PREFIX
from easeoff.tasks.catalog import ledger_in_chunks, noop, record_run, record_then_fail
from easeoff.tasks.meta import META_KEY
from easeoff.workers.cancel_script import cancel_waiting
from easeoff.workers.moves import JobMoves
from tests.conftest import WorkerProcesses, run_cli, wait_until

RATED = """
[resources."shard:7"]
hosts = ["db1"]
rate = "1/min"
"""
ONE_SLOT = """
[resources."shard:8"]
hosts = ["db1"]
[resources."shard:8".concurrency]
min = 1
max = 1
"""


def story(config: Path, job_id: str) -> dict[str, Any]:
    result = run_cli("--config", str(config), "job", job_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def text_story(config: Path, job_id: str) -> str:
    result = run_cli("--config", str(config), "job", job_id)
    assert result.returncode == 0, result.stderr
    return result.stdout


def cancel(config: Path, *job_ids: str) -> str:
    result = run_cli("--config", str(config), "cancel", *job_ids)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def parked_members(redis: Redis) -> dict[str, set[str]]:
    """Every parked index and its members: what a cancel must leave as it was, but for its job."""
    found = {}
    for key in redis.scan_iter(match=keys.PARKED_PREFIX + "*"):
        found[key.decode()] = {m.decode() for m in redis.zrange(key, 0, -1)}
    return found


def without(parked: dict[str, set[str]], job_id: str) -> dict[str, set[str]]:
    kept = {key: {m for m in members if not m.startswith(job_id + "|")} for key, members in parked.items()}
    return {key: members for key, members in kept.items() if members}


def on_shard(resource: str, redis: Redis, **kwargs: Any) -> Job:
    """A record_run job (its sleep comes before any database) re-labelled to touch `resource`."""
    job = record_run.enqueue(shard=1, connection=redis, **kwargs)
    job.meta[META_KEY]["resources"] = [resource]
    job.save_meta()
    return job


def test_queued_job_shows_its_position_and_cancel_keeps_the_rest_in_order(redis_conn: Redis, write_config) -> None:
    config = write_config()
    jobs = [noop.enqueue(shard=1, connection=redis_conn) for _ in range(4)]
    told = story(config, jobs[1].id)
    assert (told["state"], told["queue"], told["position"], told["queue_length"]) == ("queued", "heavy", 2, 4)
    assert (told["task"], told["resources"]) == ("noop", ["shard:1"])
    assert "queued on heavy, position 2 of 4" in text_story(config, jobs[1].id)

    assert "canceled (was queued)" in cancel(config, jobs[1].id, jobs[2].id)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    assert queue.get_job_ids() == [jobs[0].id, jobs[3].id]
    assert set(CanceledJobRegistry("heavy", connection=redis_conn).get_job_ids()) == {jobs[1].id, jobs[2].id}
    assert story(config, jobs[1].id)["state"] == "canceled"
    assert story(config, jobs[3].id)["position"] == 2
    again = run_cli("--config", str(config), "cancel", jobs[1].id)
    assert again.returncode == 2 and "already ended" in again.stderr


def test_unknown_id_is_one_line_and_exit_2(redis_conn: Redis, write_config) -> None:
    config = write_config()
    for command in ("job", "cancel"):
        result = run_cli("--config", str(config), command, "no-such-job")
        assert result.returncode == 2
        assert result.stderr.strip() == "easeoff: error: no such job 'no-such-job'"


def test_scheduled_and_dependent_jobs_are_told_and_canceled_alone(redis_conn: Redis, write_config) -> None:
    """Made through rq's own Queue API with easeoff meta: `enqueue_in` and `depends_on`."""
    config = write_config()
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    meta = {META_KEY: noop.job_meta((), {"shard": 1}).to_dict()}
    later = [queue.enqueue_in(timedelta(seconds=600), noop.func_path, shard=1, meta=meta) for _ in range(2)]
    parent = noop.enqueue(shard=1, connection=redis_conn)
    children = [queue.enqueue(noop.func_path, shard=1, meta=meta, depends_on=parent) for _ in range(2)]

    told = story(config, later[0].id)
    assert told["state"] == "scheduled"
    assert time.time() + 590 < told["due"] < time.time() + 610
    told = story(config, children[0].id)
    assert told["state"] == "waiting_on_dependency"
    assert told["waits"] == [{"kind": "dependency", "subject": parent.id, "until": None, "detail": "queued"}]
    assert f"job {parent.id} to finish (now queued)" in text_story(config, children[0].id)

    said = cancel(config, later[0].id, children[0].id)
    assert "canceled (was scheduled)" in said and "canceled (was waiting on dependency)" in said
    assert ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids() == [later[1].id]
    assert DeferredJobRegistry("heavy", connection=redis_conn).get_job_ids() == [children[1].id]
    assert queue.get_job_ids() == [parent.id]
    assert story(config, later[0].id)["state"] == "canceled"
    assert story(config, children[0].id)["state"] == "canceled"
    assert story(config, later[1].id)["state"] == "scheduled"


def test_a_job_claimed_meanwhile_is_running_and_untouched(redis_conn: Redis, write_config) -> None:
    """The cancel script and the claim script each run whole: once claimed, the job is running
    (its owner names an execution in `started`) and the cancel moves nothing."""
    config = write_config()
    job = noop.enqueue(shard=1, connection=redis_conn)
    other = noop.enqueue(shard=1, connection=redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    claim = JobMoves(redis_conn).claim([queue], "w1", 60)
    assert claim is not None and claim.job_id == job.id
    outcome, owner = cancel_waiting(redis_conn, job.id, "heavy")
    assert outcome == "running" and owner == redis_conn.get(keys.owner_key(job.id)).decode()
    assert queue.get_job_ids() == [other.id]
    assert redis_conn.hget(job.key, "status") == b"started"
    told = story(config, job.id)
    assert (told["state"], told["worker"], told["owner"]) == ("running", "w1", owner)


def test_a_job_parked_on_a_strained_resource_and_its_cancel(
    redis_conn: Redis, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(shard2_hosts='["dead"]')  # shard 2's host refuses: probe_error, fail closed
    jobs = [noop.enqueue(shard=2, connection=redis_conn) for _ in range(3)]
    workers.start(config, "heavy")
    park = keys.parked_key("shard:2")
    wait_until(lambda: redis_conn.zcard(park) == 3, 20, what="all three jobs parked on shard:2")
    told = story(config, jobs[0].id)
    assert told["state"] == "parked"
    assert told["deferrals"] >= 1 and told["deferred_at"] is not None
    assert any(r.startswith("probe_error:dead") for r in told["last_reasons"]), told["last_reasons"]
    assert {"kind": "resource", "subject": "shard:2"} in [{k: w[k] for k in ("kind", "subject")} for w in told["waits"]]
    text = text_story(config, jobs[0].id)
    assert "parked" in text and "resource shard:2 to clear" in text and "because  probe_error:dead" in text

    before = parked_members(redis_conn)
    assert "canceled (was parked)" in cancel(config, jobs[0].id)
    assert parked_members(redis_conn) == without(before, jobs[0].id)
    scheduled = ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids()
    assert jobs[0].id not in scheduled and {jobs[1].id, jobs[2].id} <= set(scheduled)
    assert story(config, jobs[0].id)["state"] == "canceled"
    assert story(config, jobs[1].id)["state"] == "parked"


def test_a_job_deferred_for_a_rate_and_its_cancel(redis_conn: Redis, write_config, workers: WorkerProcesses) -> None:
    config = write_config(extra=RATED)
    first = noop.enqueue(shard=7, connection=redis_conn)
    later = [noop.enqueue(shard=7, connection=redis_conn) for _ in range(2)]
    workers.start(config, "heavy")
    reserved = RESERVED_PREFIX + "shard:7"
    wait_until(lambda: redis_conn.zcard(reserved) == 2, 20, what="two jobs deferred for the rate")
    told = story(config, later[0].id)
    assert told["state"] == "deferred"
    assert told["due"] > time.time() + 10
    rate_waits = [w for w in told["waits"] if w["kind"] == "rate"]
    assert rate_waits and rate_waits[0]["subject"] == "shard:7" and rate_waits[0]["until"] > time.time()
    assert any(r.startswith("rate:shard:7") for r in told["last_reasons"])
    assert "deferred: back on heavy in" in text_story(config, later[0].id)

    kept = redis_conn.zscore(reserved, later[1].id)
    assert "canceled (was deferred)" in cancel(config, later[0].id)
    assert redis_conn.zscore(reserved, later[0].id) is None
    assert redis_conn.zscore(reserved, later[1].id) == kept
    assert story(config, later[1].id)["state"] == "deferred"
    wait_until(lambda: story(config, first.id)["state"] == "finished", 20, what="the first job to finish")


@pytest.mark.parametrize("in_process", [False, True], ids=["forking", "in-process"])
def test_a_job_parked_for_a_slot_and_a_running_one_stopped(
    redis_conn: Redis, write_config, workers: WorkerProcesses, in_process: bool
) -> None:
    """A running job that is not resumable is stopped by rq's stop-job command in either worker
    mode (in-process, rq's would kill the worker's own process group): it ends STOPPED, and the
    job waiting for its slot is handed it."""
    config = write_config(extra=ONE_SLOT)
    holder = on_shard("shard:8", redis_conn, tag="holder", seconds=60)
    waiters = [on_shard("shard:8", redis_conn, tag=f"waiter{i}", seconds=60) for i in range(2)]
    worker_a = workers.start(config, "heavy", in_process=in_process)
    workers.start(config, "heavy", in_process=in_process)
    slot = keys.parked_key(keys.SLOT_PARK_PREFIX + "shard:8")
    wait_until(lambda: redis_conn.zcard(slot) == 2, 20, what="both waiters parked for the slot")

    told = story(config, holder.id)
    assert told["state"] == "running" and told["worker"] and told["owner"] and told["started_at"]
    told = story(config, waiters[0].id)
    assert told["state"] == "parked"
    kinds = {(w["kind"], w["subject"]) for w in told["waits"]}
    assert ("slot", "shard:8") in kinds and ("turn", "shard:8") in kinds
    assert any(r.startswith("concurrency:shard:8") for r in told["last_reasons"])

    before = parked_members(redis_conn)
    cancel(config, waiters[0].id)
    assert parked_members(redis_conn) == without(before, waiters[0].id)
    assert redis_conn.zscore(slot, f"{waiters[1].id}|heavy") is not None

    assert "running: asked to stop (rq's stop-job command" in cancel(config, holder.id)
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: holder.id in failed.get_job_ids(), 15, what="the holder to end stopped")
    told = story(config, holder.id)
    assert told["state"] == "stopped" and "stopped" in (told["error"] or "").lower()
    assert worker_a.poll() is None, "a worker died of the stop"
    wait_until(lambda: story(config, waiters[1].id)["state"] == "running", 15, what="the slot handed on")
    assert story(config, waiters[0].id)["state"] == "canceled"


def test_a_resumable_job_stops_at_its_checkpoint_on_cancel(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config()
    job = ledger_in_chunks.enqueue(shard=1, chunks=2000, pause=0.02, connection=redis_conn)
    workers.start(config, "heavy")
    wait_until(lambda: story(config, job.id)["chunks"] > 0, 20, what="the job's first checkpoint")
    assert "at its next checkpoint" in cancel(config, job.id)
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in failed.get_job_ids(), 15, what="the job to stop at its checkpoint")
    told = story(config, job.id)
    assert told["state"] == "stopped" and told["status"] == "stopped"
    assert 0 < told["chunks"] < 2000 and told["cursor"] == told["chunks"]
    assert told["retries_left"] is None and told["deferrals"] == 0  # ended, not deferred to come back
    assert not redis_conn.exists(keys.CANCEL_AT_CHECKPOINT.format(job_id=job.id))
    assert ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids() == []


def test_finished_and_failed_jobs_show_their_result_and_error(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config()
    done = record_run.enqueue(shard=1, tag="story", connection=redis_conn)
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    broken = queue.enqueue("json.loads", "{not json")  # a plain rq job that raises
    proc = workers.start(config, "heavy", burst=True)
    proc.wait(timeout=60)
    told = story(config, done.id)
    assert (told["state"], told["result"], told["last_result"]) == ("finished", done.id, "successful")
    assert f'result     "{done.id}"' in text_story(config, done.id)
    told = story(config, broken.id)
    assert told["state"] == "failed" and "JSONDecodeError" in told["error"]
    assert "error      " in text_story(config, broken.id)
    result = run_cli("--config", str(config), "cancel", broken.id)
    assert result.returncode == 2 and "not canceled: it has ended (failed)" in result.stdout


def test_a_jobs_retries_both_kinds_used_and_left(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    """rq's `Retry` (rq counts down `retries_left`; easeoff keeps the max) and easeoff's retries on
    transient errors (its meta's count against the task's `retries`), in --json and in text."""
    config = write_config()
    job = record_then_fail.options(connection=redis_conn, retry=Retry(max=2, interval=[600])).delay(
        shard=1, tag="story-retry"
    )
    told = story(config, job.id)
    assert told["retries"] == {
        **{"used": 0, "allowed": 3, "last_error": None},
        **{"rq_used": 0, "rq_left": 2, "rq_max": 2, "rq_intervals": [600]},
    }
    workers.start(config, "heavy")
    wait_until(lambda: story(config, job.id)["state"] == "scheduled", 30, what="the failure scheduled for rq's retry")
    told = story(config, job.id)
    assert (told["retries"]["rq_used"], told["retries"]["rq_left"], told["retries_left"]) == (1, 1, 1)
    assert "rq retry   1 of 2 used, 1 left, intervals [600]s" in text_story(config, job.id)

    # easeoff's own, as workers/transient_errors.py leaves them after a deadlock's retry
    job.meta[META_KEY] |= {"retries": 1, "last_error": "(1213) Deadlock found when trying to get lock"}
    job.save_meta()
    told = story(config, job.id)
    assert told["retries"]["used"] == 1 and told["retries"]["last_error"].startswith("(1213) Deadlock found")
    text = text_story(config, job.id)
    assert "retries    1 of 3 used on transient errors, 2 left (last for: (1213) Deadlock found" in text, text


def test_through_easeoff_options_a_dependent_of_a_parked_parent_and_an_enqueue_in_job(
    redis_conn: Redis, write_config, workers: WorkerProcesses
) -> None:
    """The same states made through easeoff's own API (`options(depends_on=)`, `enqueue_in`), the
    parent parked on a strained resource: the dependent names it; a cancel of the dependent
    leaves the parent parked, and a cancel of the parent leaves the dependent waiting."""
    config = write_config(shard2_hosts='["dead"]')
    parent = noop.enqueue(shard=2, connection=redis_conn)
    child = noop.options(depends_on=parent, connection=redis_conn).delay(shard=1)
    later = noop.enqueue_in(timedelta(seconds=600), shard=1, connection=redis_conn)
    workers.start(config, "heavy")
    wait_until(lambda: story(config, parent.id)["state"] == "parked", 20, what="the parent parked on shard:2")
    told = story(config, child.id)
    assert told["state"] == "waiting_on_dependency"
    assert told["waits"] == [{"kind": "dependency", "subject": parent.id, "until": None, "detail": "scheduled"}]
    assert story(config, later.id)["state"] == "scheduled"

    before = parked_members(redis_conn)
    cancel(config, child.id, later.id)
    assert parked_members(redis_conn) == before  # the parent's entries as they were
    assert story(config, parent.id)["state"] == "parked"
    assert ScheduledJobRegistry("heavy", connection=redis_conn).get_job_ids() == [parent.id]
    assert {story(config, j.id)["state"] for j in (child, later)} == {"canceled"}


@pytest.mark.unit
def test_a_retry_scheduled_after_a_failure_is_scheduled_not_deferred() -> None:
    """Pure: rq schedules a retry's interval in the same registry as easeoff's deferrals; a
    deferral older than the job's last end is history, not why it waits now."""
    from easeoff.tasks.meta import JobMeta
    from easeoff.workers.job_place import _state

    places = dict(
        in_queue=False, scheduled=True, waiting_on_dependency=False, running=False, parked=False,
        finished=False, failed=False, canceled=False,
    )  # fmt: skip
    deferred_once = JobMeta(task="t", deferrals=1, deferred_at=100.0)
    assert _state("scheduled", deferred_once, **places, ended_at=None) == "deferred"
    assert _state("scheduled", deferred_once, **places, ended_at=150.0) == "scheduled"
    assert _state("scheduled", JobMeta(task="t"), **places, ended_at=None) == "scheduled"
    assert _state("scheduled", JobMeta(task="t"), **{**places, "parked": True}, ended_at=None) == "parked"
    assert _state("started", JobMeta(task="t"), **{**places, "in_queue": True}, ended_at=None) == "queued"
