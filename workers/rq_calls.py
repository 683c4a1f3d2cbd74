"""The calls into rq's and redis-py's internals that easeoff's worker makes, in one place.

Read from rq 3.0.0 and redis-py 8.2.0 (scripts/constraints.txt pins both). Each has a test by
name in tests/test_rq_calls.py, so an upgrade that moves one fails there, not in a job.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq import Worker, worker_registration
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
)
from rq.utils import now


def set_socket_timeout(client: Redis, seconds: float) -> None:
    """The pool's socket timeout for every connection it makes from now on. rq's
    `Worker._set_connection` raises it to the dequeue timeout + 10 s in the same dict."""
    client.connection_pool.connection_kwargs["socket_timeout"] = seconds


def raw_client(client: Any) -> Redis:
    """The Redis client under a wrapper that changes only how pipelines are made (a fenced view)."""
    inner = getattr(client, "_client", client)
    assert isinstance(inner, Redis)
    return inner


def clean_registries_but_started(worker: Worker) -> None:
    """rq's `Worker.clean_registries`, less `StartedJobRegistry.cleanup`: the registries rq
    cleans per queue under its maintenance lock, the worker registry, the intermediate queue."""
    for queue in worker.queues:
        if not queue.acquire_maintenance_lock():
            continue
        worker.log.info("Worker %s: cleaning registries for queue: %s", worker.name, queue.name)
        for registry_class in (FinishedJobRegistry, FailedJobRegistry, DeferredJobRegistry, ReadyJobRegistry):
            registry_class(
                name=queue.name, connection=queue.connection, job_class=queue.job_class, serializer=queue.serializer
            ).cleanup()
        worker_registration.clean_worker_registry(queue)
        queue.intermediate_queue.cleanup(worker, queue)
        queue.release_maintenance_lock()
    worker.last_cleaned_at = now()  # type: ignore[assignment]  # rq declares it None


def record_failure(job: Job, reason: str, pipeline: Any, worker_name: str, execution_id: str) -> None:
    """rq's `Job._handle_failure`: the failed registry and the result stream (so `rq info` and
    `job.latest_result()` show the reason), inside the caller's transaction."""
    job._handle_failure(reason, pipeline=pipeline, worker_name=worker_name, execution_id=execution_id)


def unreadable_meta(job: Job) -> bool:
    """Whether rq could not decode the job's meta: rq 3 keeps going with `{"unserialized": ...}`
    and notes the raw bytes in `Job._unreadable_meta`; the job's resources would be lost."""
    return getattr(job, "_unreadable_meta", None) is not None


class _Unrecorded:
    """A pipeline that records nothing: what rq would write has been written already."""

    def hset(self, *args: Any, **kwargs: Any) -> None:
        pass


def started_in_memory(job: Job, worker_name: str) -> None:
    """rq's `Job.prepare_for_execution` for the horse's copy of the job only (its status, worker,
    started and heartbeat times): claim.lua wrote the same fields to Redis when it claimed the job."""
    job.prepare_for_execution(worker_name, pipeline=_Unrecorded())  # type: ignore[arg-type]
