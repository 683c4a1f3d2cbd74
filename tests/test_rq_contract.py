"""GatedWorker keeps rq's Worker contract where easeoff does not differ on purpose: rq's
classmethods rebuild it from Redis, its dequeue strategies are honoured, and a task that
returns rq's `Retry` is counted under its own labels with its concurrency slot released."""

from __future__ import annotations

import importlib.metadata
import random
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import load_config
from easeoff.feedback.connect import connect
from easeoff.feedback.tally.counters import read_counts
from easeoff.tasks.catalog import noop
from easeoff.tasks.registry import load_task_modules
from easeoff.workers.gated_worker import GatedWorker
from tests.conftest import WorkerProcesses, wait_until

RETRYING = """
from rq import Retry

from easeoff import heavy_task


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"], concurrency=1)
def retry_me(shard: int) -> Retry:
    return Retry(max=1)


class Refused(Exception):
    pass


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"])
def raise_me(shard: int) -> None:
    raise Refused("pkg.mod.Other: looks like a traceback's last line\\nValueError: and this too")
"""


def test_rq_rebuilds_registered_gated_workers(redis_conn: Redis, write_config, workers: WorkerProcesses) -> None:
    workers.start(write_config(), "heavy", "archive")
    wait_until(lambda: Worker.count(connection=redis_conn) == 1, 20, what="the worker to register")
    found = GatedWorker.all(connection=redis_conn)
    assert len(found) == 1 and isinstance(found[0], GatedWorker)
    assert found[0].queue_names() == ["heavy", "archive"]
    again = GatedWorker.find_by_key(found[0].key, connection=redis_conn)
    assert again is not None and again.name == found[0].name and again.queue_names() == ["heavy", "archive"]
    assert again.serializer is JSONSerializer


def finishing_order(redis: Redis, queues: list[str]) -> list[str]:
    jobs = [
        Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        for q in queues
        for job_id in FinishedJobRegistry(q, connection=redis).get_job_ids()
    ]
    return [j.origin for j in sorted(jobs, key=lambda j: j.ended_at)]


@pytest.mark.parametrize("strategy", ["default", "round_robin", "random"])
def test_dequeue_strategies_are_honoured(redis_conn: Redis, write_config, strategy: str) -> None:
    queues = ["heavy", "archive", "recount"]
    for name in queues:
        queue = Queue(name, connection=redis_conn, serializer=JSONSerializer)
        for _ in range(4):
            queue.enqueue_call("easeoff.tasks.catalog.noop", meta={"easeoff": {"task": "noop", "resources": []}})
    random.seed(3)  # rq's `random` strategy shuffles with the module's generator
    worker = GatedWorker(queues, connection=redis_conn, config=load_config(write_config()))
    worker.work(burst=True, dequeue_strategy=strategy)
    order = finishing_order(redis_conn, queues)
    assert sorted(order) == sorted(queues * 4)
    if strategy == "default":
        assert order == ["heavy"] * 4 + ["archive"] * 4 + ["recount"] * 4
    elif strategy == "round_robin":
        assert order == queues * 4
    else:
        assert order not in (["heavy"] * 4 + ["archive"] * 4 + ["recount"] * 4, queues * 4)


def test_a_task_returning_retry_is_counted_under_its_own_labels(
    redis_conn: Redis, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "retrying.py").write_text(RETRYING)
    monkeypatch.syspath_prepend(str(tmp_path))
    load_task_modules(["retrying"])
    from retrying import retry_me  # the module exists only for this test

    noop.enqueue(shard=1, connection=redis_conn)  # ends first, so a stale "ending job" would label the retry
    job = retry_me.enqueue(shard=1, connection=redis_conn)
    worker = GatedWorker(["heavy"], connection=redis_conn, config=load_config(write_config()))
    worker.work(burst=True)

    assert FailedJobRegistry("heavy", connection=redis_conn).get_job_ids() == [job.id]
    counts = {
        kind: {(c.queue, c.task, c.reason): c.value for c in rows} for kind, rows in read_counts(redis_conn).items()
    }
    assert counts["finished"] == {("heavy", "noop", ""): 1}
    assert counts["failed"] == {("heavy", "retry_me", "Retry"): 2}  # retried once, then failed at retry.max
    assert counts["started"] == {("heavy", "noop", ""): 1, ("heavy", "retry_me", ""): 2}
    assert redis_conn.zcard("easeoff:leases:task:retry_me") == 0  # released as it ended, not at the lease's TTL
    sys.modules.pop("retrying", None)


def test_a_work_horse_connection_reads_no_package_metadata(write_config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each work horse opens a new Redis connection; redis-py 8 would read its METADATA file for
    each one (a third of a millisecond and ~300 page faults per job) unless told who it is."""
    client = connect(load_config(write_config()))
    pool = client.connection_pool

    def no_metadata(name: str) -> str:
        raise AssertionError(f"package metadata read for {name!r} on a new connection")

    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    conn = pool.connection_class(**pool.connection_kwargs)  # what the pool makes after a fork
    try:
        conn.connect()
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", "PONG", True)
    finally:
        conn.disconnect()
    driver = pool.connection_kwargs.get("driver_info")
    if driver is not None:  # redis-py 8+: it says easeoff in CLIENT LIST (Redis 7.2+)
        assert "easeoff_v" in driver.formatted_name


def test_a_failure_is_counted_under_the_class_it_raised_whatever_its_message_says(
    redis_conn: Redis, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label is the raised class (rq's handle_exception hands it over), not a guess from the
    traceback's text: this message's last line reads like another exception's."""
    (tmp_path / "retrying.py").write_text(RETRYING)
    monkeypatch.syspath_prepend(str(tmp_path))
    load_task_modules(["retrying"])
    from retrying import raise_me  # the module exists only for this test

    raise_me.enqueue(shard=1, connection=redis_conn)
    GatedWorker(["heavy"], connection=redis_conn, config=load_config(write_config())).work(burst=True)
    failed = {(c.task, c.reason): c.value for c in read_counts(redis_conn)["failed"]}
    assert failed == {("raise_me", "Refused"): 1}
    sys.modules.pop("retrying", None)
