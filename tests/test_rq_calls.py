"""Each call workers/rq_calls.py makes into rq's and redis-py's internals, tested by name: an
upgrade that moves one fails here, with the call's name, not in a job."""

from __future__ import annotations

import inspect

from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import load_config
from easeoff.feedback.connect import SOCKET_TIMEOUT, connect
from easeoff.tasks.catalog import noop
from easeoff.workers import rq_calls
from easeoff.workers.fencing import Fence
from easeoff.workers.gated_worker import GatedWorker, _FencedClient


def test_set_socket_timeout_is_what_rqs_set_connection_changes(write_config) -> None:
    """rq's `Worker._set_connection` writes the pool's `connection_kwargs["socket_timeout"]`."""
    config = load_config(write_config())
    client = connect(config)
    Worker(["heavy"], connection=client)  # plain rq: raises it to dequeue timeout + 10 s
    assert client.connection_pool.connection_kwargs["socket_timeout"] > 60
    rq_calls.set_socket_timeout(client, SOCKET_TIMEOUT)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == SOCKET_TIMEOUT
    assert client.connection_pool.make_connection().socket_timeout == SOCKET_TIMEOUT
    assert "_set_connection" in dict(inspect.getmembers(Worker))


def test_raw_client_sees_through_the_fenced_view(redis_conn: Redis) -> None:
    view = _FencedClient(redis_conn, Fence("j", 1, "e"))
    assert rq_calls.raw_client(view) is redis_conn
    assert rq_calls.raw_client(redis_conn) is redis_conn


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
    rq_calls.clean_registries_but_started(worker)
    assert redis_conn.zscore(finished.key, job.id) is None
    assert redis_conn.zscore(started.key, f"{job.id}:exec") == 1
    assert worker.last_cleaned_at is not None
    assert Job.exists(job.id, connection=redis_conn)


def test_record_failure_writes_rqs_failed_registry_and_result(redis_conn: Redis) -> None:
    """rq's `Job._handle_failure`, in the caller's transaction."""
    job = noop.enqueue(connection=redis_conn)
    with redis_conn.pipeline() as pipe:
        rq_calls.record_failure(job, "easeoff: why", pipe, "w1", "exec-1")
        pipe.execute()
    assert job.id in FailedJobRegistry("heavy", connection=redis_conn).get_job_ids()
    result = job.latest_result()
    assert result is not None and result.exc_string == "easeoff: why"


def test_unreadable_meta_is_what_rq_notes_for_a_meta_it_cannot_decode(redis_conn: Redis) -> None:
    """rq's `Job._unreadable_meta`, set when the meta field does not decode."""
    job = noop.enqueue(connection=redis_conn)
    assert not rq_calls.unreadable_meta(Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer))
    redis_conn.hset(job.key, "meta", b"\x80not json")
    assert rq_calls.unreadable_meta(Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer))


def test_started_in_memory_marks_the_job_started_and_writes_nothing(redis_conn: Redis) -> None:
    job = Job.create(func="builtins.print", connection=redis_conn, serializer=JSONSerializer)
    job.save()
    before = redis_conn.hgetall(job.key)
    rq_calls.started_in_memory(job, "w1")
    assert job.get_status(refresh=False) == JobStatus.STARTED
    assert job.worker_name == "w1" and job.started_at is not None and job.last_heartbeat == job.started_at
    assert redis_conn.hgetall(job.key) == before
