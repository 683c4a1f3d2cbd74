"""The calls into rq's internals that easeoff makes, in one place (redis-py's:
feedback/redis_internals.py).

Read from rq 3.0.0 (scripts/constraints.txt pins it). Each has a test by name in
tests/test_rq_internals.py, so an upgrade that moves one fails there, not in a job. The worker's
private attributes are read and written here too: rq sets them in `Worker.__init__` and its loop.
"""

from __future__ import annotations

from typing import Any

from rq import Queue, Worker, worker_registration
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
)
from rq.utils import now
from rq.worker import WorkerStatus

# The private methods easeoff's workers override (workers/gated_worker.py, workers/in_process.py),
# each with the parameters rq calls it with.
OVERRIDDEN: dict[type, dict[str, tuple[str, ...]]] = {
    Worker: {
        "_finalize_failure": ("self", "job", "queue", "execution", "exc_info"),
        "_finalize_success": ("self", "job", "queue", "execution", "return_value"),
    },
}


def ordered_queues(worker: Worker) -> list[Queue]:
    """The worker's queues in the order its dequeue strategy put them (rq's `reorder_queues`)."""
    queues: list[Queue] = worker._ordered_queues
    return queues


def stop_requested(worker: Worker) -> bool:
    """Whether a warm shutdown was asked for while the worker looked idle (rq's SIGTERM handler)."""
    return bool(worker._stop_requested)


def look_busy(worker: Worker, busy: bool) -> None:
    """The state rq's SIGTERM handler reads to choose between waiting for the job and stopping at
    once, in memory only: `set_state` would write it to Redis as well, a round trip a claim."""
    worker._state = WorkerStatus.BUSY if busy else WorkerStatus.IDLE


def horse_pid(worker: Worker) -> int:
    return int(worker._horse_pid)


def stopped_job_id(worker: Worker) -> str | None:
    """The job rq's stop-job command named (rq sets it before killing the horse)."""
    job_id: str | None = worker._stopped_job_id
    return job_id


def note_stopped(worker: Worker, job_id: str | None) -> None:
    """As rq's stop-job handler notes the job it stops, so that its failure is recorded STOPPED
    (None: no job is being stopped)."""
    worker._stopped_job_id = job_id


def pubsub_exception_handler(worker: Worker) -> Any:
    """rq's handler for its pub/sub thread's errors (logs them and lets the thread end)."""
    return worker._pubsub_exception_handler


def dependency_ids(job: Job) -> list[str]:
    """The ids of the jobs `job` depends on, as rq keeps them in the job's hash."""
    return list(job._dependency_ids or [])


def exc_info_text(job: Job) -> str | None:
    """The failure text rq 3 keeps on the job hash itself (`exc_info`), for jobs failed before
    results were kept apart, or by a path that wrote none."""
    text: str | None = job._exc_info
    return text


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
