"""Each call feedback/rq_internals.py makes into rq's internals, tested by name: an upgrade that
moves one fails here, with the call's name, not in a job."""

from __future__ import annotations

import inspect

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from easeoff.feedback import rq_internals
from easeoff.feedback.config import load_config
from easeoff.tasks.catalog import noop
from easeoff.workers.gated_worker import GatedWorker
from easeoff.workers.in_process import InProcessWorker


def test_clean_registries_but_started_cleans_the_rest_and_leaves_started_alone(redis_conn: Redis, write_config) -> None:
    """rq's cleanup of every registry but `started` (Queue.acquire_maintenance_lock, the registries'
    cleanup, worker_registration.clean_worker_registry, queue.intermediate_queue.cleanup)."""
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    job = noop.enqueue(connection=redis_conn)
    finished, started = (
        FinishedJobRegistry("heavy", connection=redis_conn),
        StartedJobRegistry("heavy", connection=redis_conn),
    )
    redis_conn.zadd(finished.key, {job.id: 1})  # long expired
    redis_conn.zadd(started.key, {f"{job.id}:exec": 1})  # long lapsed, by any clock
    worker = GatedWorker([queue], connection=redis_conn, config=load_config(write_config()))
    rq_internals.clean_registries_but_started(worker)
    assert redis_conn.zscore(finished.key, job.id) is None
    assert redis_conn.zscore(started.key, f"{job.id}:exec") == 1
    assert worker.last_cleaned_at is not None
    assert Job.exists(job.id, connection=redis_conn)


def test_record_failure_writes_rqs_failed_registry_and_result(redis_conn: Redis) -> None:
    """rq's `Job._handle_failure`, in the caller's transaction."""
    job = noop.enqueue(connection=redis_conn)
    with redis_conn.pipeline() as pipe:
        rq_internals.record_failure(job, "easeoff: why", pipe, "w1", "exec-1")
        pipe.execute()
    assert job.id in FailedJobRegistry("heavy", connection=redis_conn).get_job_ids()
    result = job.latest_result()
    assert result is not None and result.exc_string == "easeoff: why"


def test_unreadable_meta_is_what_rq_notes_for_a_meta_it_cannot_decode(redis_conn: Redis) -> None:
    """rq's `Job._unreadable_meta`, set when the meta field does not decode."""
    job = noop.enqueue(connection=redis_conn)
    assert not rq_internals.unreadable_meta(Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer))
    redis_conn.hset(job.key, "meta", b"\x80not json")
    assert rq_internals.unreadable_meta(Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer))


def test_started_in_memory_marks_the_job_started_and_writes_nothing(redis_conn: Redis) -> None:
    job = Job.create(func="builtins.print", connection=redis_conn, serializer=JSONSerializer)
    job.save()
    before = redis_conn.hgetall(job.key)
    rq_internals.started_in_memory(job, "w1")
    assert job.get_status(refresh=False) == JobStatus.STARTED
    assert job.worker_name == "w1" and job.started_at is not None and job.last_heartbeat == job.started_at
    assert redis_conn.hgetall(job.key) == before


@pytest.mark.unit
def test_every_overridden_method_is_still_rqs_with_its_parameters() -> None:
    for base, methods in rq_internals.OVERRIDDEN.items():
        for name, parameters in methods.items():
            assert hasattr(base, name), f"rq's {base.__name__}.{name} is gone"
            assert tuple(inspect.signature(getattr(base, name)).parameters) == parameters, name


@pytest.mark.unit
def test_the_overrides_listed_are_every_private_rq_method_easeoff_overrides() -> None:
    listed = {name for methods in rq_internals.OVERRIDDEN.values() for name in methods}
    overridden = {
        name
        for cls in (GatedWorker, InProcessWorker, *GatedWorker.__mro__)
        if cls.__module__.startswith("easeoff")
        for name in vars(cls)
        if name.startswith("_") and not name.startswith("__") and hasattr(Worker, name)
    }
    assert overridden == listed


def test_the_workers_private_attributes_are_set_by_rqs_init(redis_conn: Redis) -> None:
    """rq's `Worker.__init__` sets each private attribute rq_internals reads or writes."""
    worker = Worker(["heavy"], connection=redis_conn)
    assert [q.name for q in rq_internals.ordered_queues(worker)] == ["heavy"]
    assert rq_internals.stop_requested(worker) is False
    assert rq_internals.horse_pid(worker) == 0
    assert rq_internals.stopped_job_id(worker) is None
    rq_internals.note_stopped(worker, "j1")
    assert rq_internals.stopped_job_id(worker) == "j1"
    rq_internals.look_busy(worker, True)
    assert worker.get_state() == WorkerStatus.BUSY
    rq_internals.look_busy(worker, False)
    assert worker.get_state() == WorkerStatus.IDLE
    assert callable(rq_internals.pubsub_exception_handler(worker))


def test_dependency_ids_and_exc_info_are_read_from_the_jobs_hash(redis_conn: Redis) -> None:
    parent = noop.enqueue(connection=redis_conn)
    child = Queue("heavy", connection=redis_conn, serializer=JSONSerializer).enqueue(
        "builtins.print", depends_on=parent
    )
    fetched = Job.fetch(child.id, connection=redis_conn, serializer=JSONSerializer)
    assert rq_internals.dependency_ids(fetched) == [parent.id]
    redis_conn.hset(child.key, "exc_info", "Traceback ...\nValueError: boom")
    fetched = Job.fetch(child.id, connection=redis_conn, serializer=JSONSerializer)
    assert (rq_internals.exc_info_text(fetched) or "").endswith("ValueError: boom")
